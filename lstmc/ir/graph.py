"""The dataflow IR for one timestep of a cell: a small Graph/Node API over use edges.

Nodes keep their operands in order and the graph keeps the use edges (operand -> user, in
both directions) in step, so passes call `set_operands` / `replace_all_uses` and never touch
edges. Nodes are visited in a deterministic topological order (ties broken by creation
order), which keeps printing and code generation stable. The edges are plain dicts: networkx,
which held them before, took 0.12-0.16 s of every `import lstmc` for what is below.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping

from lstmc.ir import ops
from lstmc.ir.shapes import Shape


def lexicographic_order(
    successors: Mapping[Hashable, Iterable[Hashable]], key: Callable[[Hashable], object]
) -> list | None:
    """The vertices of the directed graph `successors` (vertex -> the vertices its edges go
    to; every vertex a key) in topological order, taking the ready vertex of least `key`
    first (Kahn's algorithm with a heap, as networkx's lexicographical_topological_sort); None
    if the graph has a cycle."""
    indegree = dict.fromkeys(successors, 0)
    for targets in successors.values():
        for v in targets:
            indegree[v] += 1
    position = {u: i for i, u in enumerate(indegree)}  # ties: the vertex added first
    ready = [(key(u), position[u], u) for u, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, u = heapq.heappop(ready)
        order.append(u)
        for v in successors[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(ready, (key(v), position[v], v))
    return order if len(order) == len(indegree) else None


class Node:
    """One op application. `name` is unique in its graph and printed as `%name`."""

    __slots__ = ("name", "op", "operands", "attrs", "shape", "index")

    def __init__(self, name: str, op: str, operands: tuple, attrs: dict, shape: Shape, index: int):
        self.name = name
        self.op = op
        self.operands: tuple[Node, ...] = operands
        self.attrs = attrs
        self.shape = shape
        self.index = index  # creation order, the tie-break of the topological order

    @property
    def opdef(self) -> ops.OpDef:
        return ops.get(self.op)

    @property
    def kind(self) -> str:
        return self.opdef.kind

    def __repr__(self) -> str:
        return f"<Node %{self.name} = {self.op}>"


class Graph:
    """One timestep of a recurrent cell.

    `attrs` holds graph-level facts: `cell` (name), `sizes` (symbol order), and what passes add
    (`unroll`, `fixed_sizes`).
    """

    def __init__(self, attrs: dict | None = None):
        self.attrs: dict = dict(attrs or {})
        # use edges: operand name -> its users' names, and user name -> its operands' names
        # (dicts as ordered sets: one edge however many times a user takes an operand)
        self._succ: dict[str, dict[str, None]] = {}
        self._pred: dict[str, dict[str, None]] = {}
        self._nodes: dict[str, Node] = {}
        self._counter = 0
        self.reserved: set[str] = set()  # names fresh_name must not hand out (spec names)
        # nodes()' order, kept until the next change: the passes and code generators ask for
        # it ~50 times a compile, and each sort took ~0.5 ms (a warm load is ~0.5 s)
        self._order: list[Node] | None = None

    # -- construction ------------------------------------------------------------------------

    def fresh_name(self, hint: str) -> str:
        hint = hint or "t"
        if hint not in self._nodes and hint not in self.reserved:
            return hint
        i = 1
        while f"{hint}_{i}" in self._nodes or f"{hint}_{i}" in self.reserved:
            i += 1
        return f"{hint}_{i}"

    def add(
        self,
        op: str,
        operands: Iterable[Node] = (),
        attrs: dict | None = None,
        name: str | None = None,
        shape: Shape | None = None,
    ) -> Node:
        """Create a node; its shape comes from the op's shape rule (sources pass attrs.shape).

        Raises ops.ShapeError when the operands' shapes don't fit the op.
        """
        opdef = ops.get(op)
        operands = tuple(operands)
        attrs = dict(attrs or {})
        if opdef.arity is not None and len(operands) != opdef.arity:
            raise ops.ShapeError(f"{op} takes {opdef.arity} operands, got {len(operands)}")
        for o in operands:
            if self._nodes.get(o.name) is not o:
                raise ValueError(f"operand %{o.name} is not in this graph")
        if shape is None:
            shape = opdef.shape([o.shape for o in operands], attrs)
        name = (
            name
            if name and name in self.reserved and name not in self._nodes
            else self.fresh_name(name or op)
        )
        node = self._adopt(name, op, operands, attrs, shape, self._counter)
        self._counter += 1
        return node

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: Node) -> bool:
        return self._nodes.get(node.name) is node

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def nodes(self) -> list[Node]:
        """All nodes in deterministic topological order."""
        if self._sorted() is None:
            raise ValueError("the graph has a cycle")
        return list(self._order)  # the caller's own list: it may change the graph meanwhile

    def _sorted(self) -> list[Node] | None:
        """The kept order, sorted again after a change; None if the graph has a cycle."""
        if self._order is None:
            order = lexicographic_order(self._succ, lambda n: self._nodes[n].index)
            if order is not None:
                self._order = [self._nodes[n] for n in order]
        return self._order

    def users(self, node: Node) -> list[Node]:
        return sorted((self._nodes[n] for n in self._succ[node.name]), key=lambda n: n.index)

    def find(self, op: str) -> list[Node]:
        return [n for n in self.nodes() if n.op == op]

    def by_attr_name(self, op: str) -> dict[str, Node]:
        """Source or sink nodes of one op keyed by their `name` attr."""
        return {n.attrs["name"]: n for n in self.nodes() if n.op == op}

    def ancestors(self, node: Node) -> set[str]:
        """Names of the nodes `node` depends on, through any chain of operands."""
        return self._reach(node.name, self._pred)

    def descendants(self, node: Node) -> set[str]:
        """Names of the nodes that depend on `node`, through any chain of users."""
        return self._reach(node.name, self._succ)

    def has_cycle(self) -> bool:
        return self._sorted() is None

    @staticmethod
    def _reach(name: str, edges: dict[str, dict[str, None]]) -> set[str]:
        seen: set[str] = set()
        stack = list(edges[name])
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(edges[n])
        seen.discard(name)  # never the node itself, even on a cycle (as networkx)
        return seen

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    # -- mutation ----------------------------------------------------------------------------

    def set_operands(self, node: Node, operands: Iterable[Node]) -> None:
        operands = tuple(operands)
        for o in operands:
            if self._nodes.get(o.name) is not o:
                raise ValueError(f"operand %{o.name} is not in this graph")
        for o in node.operands:
            self._succ[o.name].pop(node.name, None)
            self._pred[node.name].pop(o.name, None)
        node.operands = operands
        self._order = None
        for o in operands:
            self._add_edge(o.name, node.name)

    def replace_all_uses(self, old: Node, new: Node) -> None:
        """Make every user of `old` use `new` instead."""
        for user in self.users(old):
            self.set_operands(user, [new if o is old else o for o in user.operands])

    def remove(self, node: Node) -> None:
        if self._succ[node.name]:
            raise ValueError(f"%{node.name} still has users")
        for o in self._pred.pop(node.name):
            self._succ[o].pop(node.name, None)
        del self._succ[node.name]
        del self._nodes[node.name]
        self._order = None

    def copy(self) -> Graph:
        """A deep copy (new Node objects, same names and order)."""
        new = Graph(self.attrs)
        for n in self.nodes():
            new._adopt(
                n.name,
                n.op,
                tuple(new._nodes[o.name] for o in n.operands),
                dict(n.attrs),
                n.shape,
                n.index,
            )
        new._counter = self._counter
        return new

    def _adopt(self, name, op, operands, attrs, shape, index) -> Node:
        node = Node(name, op, operands, attrs, shape, index)
        self._nodes[name] = node
        self._order = None
        self._succ[name], self._pred[name] = {}, {}
        for o in operands:
            self._add_edge(o.name, name)
        return node

    def _add_edge(self, operand: str, user: str) -> None:
        self._succ[operand][user] = None
        self._pred[user][operand] = None
