"""The dataflow IR for one timestep of a cell: a small Graph/Node API over networkx.

Nodes keep their operands in order (networkx edges are unordered) and the graph keeps the use
edges in step, so passes call `set_operands` / `replace_all_uses` and never touch edges. Nodes
are visited in a deterministic topological order (ties broken by creation order), which keeps
printing and code generation stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import networkx as nx

from lstmc.ir import ops
from lstmc.ir.shapes import Shape


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
        self._g = nx.DiGraph()
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
        node = Node(name, op, operands, attrs, shape, self._counter)
        self._counter += 1
        self._nodes[name] = node
        self._order = None
        self._g.add_node(name)
        for o in operands:
            self._g.add_edge(o.name, name)
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
        if self._order is None:
            order = nx.lexicographical_topological_sort(self._g, key=lambda n: self._nodes[n].index)
            self._order = [self._nodes[n] for n in order]
        return list(self._order)  # the caller's own list: it may change the graph meanwhile

    def users(self, node: Node) -> list[Node]:
        return sorted(
            (self._nodes[n] for n in self._g.successors(node.name)), key=lambda n: n.index
        )

    def find(self, op: str) -> list[Node]:
        return [n for n in self.nodes() if n.op == op]

    def by_attr_name(self, op: str) -> dict[str, Node]:
        """Source or sink nodes of one op keyed by their `name` attr."""
        return {n.attrs["name"]: n for n in self.nodes() if n.op == op}

    def ancestors(self, node: Node) -> set[str]:
        return nx.ancestors(self._g, node.name)

    def descendants(self, node: Node) -> set[str]:
        return nx.descendants(self._g, node.name)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    # -- mutation ----------------------------------------------------------------------------

    def set_operands(self, node: Node, operands: Iterable[Node]) -> None:
        operands = tuple(operands)
        for o in node.operands:
            if self._g.has_edge(o.name, node.name):
                self._g.remove_edge(o.name, node.name)
        node.operands = operands
        self._order = None
        for o in operands:
            self._g.add_edge(o.name, node.name)

    def replace_all_uses(self, old: Node, new: Node) -> None:
        """Make every user of `old` use `new` instead."""
        for user in self.users(old):
            self.set_operands(user, [new if o is old else o for o in user.operands])

    def remove(self, node: Node) -> None:
        if any(True for _ in self._g.successors(node.name)):
            raise ValueError(f"%{node.name} still has users")
        self._g.remove_node(node.name)
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
        self._g.add_node(name)
        for o in operands:
            self._g.add_edge(o.name, name)
        return node

    @property
    def nx(self) -> nx.DiGraph:
        """The underlying networkx graph (read-only use: DOT export, analyses)."""
        return self._g
