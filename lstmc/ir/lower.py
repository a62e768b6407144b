"""Lower a parsed `Cell` to the dataflow IR, resolving names and checking shapes.

Every check that needs the meaning of an expression happens here, reported at the expression's
file:line:col: unknown names (with the nearest defined one), shapes (through each op's own shape
rule), `@` only between a matrix param and a vector, cycles among equations, updates of the
wrong size, unused params. Sources (input, state, params, constants) become nodes named as in the
spec; each equation's node takes the equation's name. Equations are lowered each after the ones
it uses (found without recursion, so chains of any length work; parse depth is bounded).
"""

from __future__ import annotations

from lstmc.errors import Location, SpecError, did_you_mean
from lstmc.ir import ops
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import shape_str
from lstmc.spec.cell import Cell
from lstmc.spec.expr import BinOp, Call, Expr, Name, Neg, Num

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default
_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class _Lowering:
    def __init__(self, cell: Cell):
        self.cell = cell
        self.graph = Graph({"cell": cell.name, "sizes": list(cell.sizes)})
        self.graph.reserved |= (
            set(cell.equations)
            | set(cell.inputs)
            | set(cell.state)
            | set(cell.params)
            | set(cell.constants)
        )
        self.env: dict[str, Node] = {}
        self.referenced: set[str] = set()  # names some expression mentions (`b: W` uses W)

    def node(self, op: str, operands, loc: Location, attrs=None, name=None) -> Node:
        try:
            return self.graph.add(op, operands, attrs, name=name)
        except ops.ShapeError as exc:
            raise SpecError(str(exc), loc) from None

    def run(self) -> Graph:
        cell = self.cell
        for decl in cell.inputs.values():
            self.env[decl.name] = self.graph.add(
                "input", attrs={"name": decl.name, "shape": decl.shape}, name=decl.name
            )
        for decl in cell.state.values():
            self.env[decl.name] = self.graph.add(
                "state", attrs={"name": decl.name, "shape": decl.shape}, name=decl.name
            )
        for decl in cell.params.values():
            self.env[decl.name] = self.graph.add(
                "param",
                attrs={"name": decl.name, "shape": decl.shape, "init": decl.init},
                name=decl.name,
            )
        for const in cell.constants.values():
            self.env[const.name] = self.graph.add(
                "const", attrs={"value": const.value, "name": const.name}, name=const.name
            )
        for name in self.equation_order():
            self.equation(name)
        for state, eq in cell.update.items():
            value = self.expr(eq.expr)
            want = cell.state[state].shape
            if value.shape != want:
                raise SpecError(
                    f"the update of `{state}` has shape {shape_str(value.shape)} but `{state}` "
                    f"is declared {shape_str(want)}",
                    eq.loc,
                )
            self.graph.add("update", [value], {"name": state}, name=f"next_{state}")
        for out, loc in cell.outputs:
            value = self.env[out]
            if len(value.shape) != 1:
                raise SpecError(
                    f"output `{out}` must be a vector, got "
                    f"{shape_str(value.shape) if value.shape else 'a scalar'}",
                    loc,
                )
            self.graph.add("output", [value], {"name": out}, name=f"out_{out}")
        for decl in cell.params.values():
            if decl.name not in self.referenced:
                raise SpecError(f"param `{decl.name}` is declared but never used", decl.loc)
        return self.graph

    def equation_order(self) -> list[str]:
        """The equations, each after the ones it uses (depth first, in declaration order, so
        the IR's node order is stable). Iterative, so any chain length is fine; a cycle is an
        error at the equation that closes it."""
        equations = self.cell.equations
        uses = {name: _equations_used(eq.expr, equations) for name, eq in equations.items()}
        order: list[str] = []
        status: dict[str, str] = {}  # "open" while on the stack, then "done"
        for root in equations:
            if root in status:
                continue
            status[root] = "open"
            stack = [(root, iter(uses[root]))]
            while stack:
                name, pending = stack[-1]
                for dep in pending:
                    if status.get(dep) == "open":
                        path = [n for n, _ in stack]
                        cycle = path[path.index(dep) :] + [dep]
                        raise SpecError(
                            "equations depend on each other in a cycle: "
                            + " -> ".join(cycle)
                            + " (inside `equations`, only state names refer to the previous step)",
                            equations[dep].loc,
                        )
                    if dep not in status:
                        status[dep] = "open"
                        stack.append((dep, iter(uses[dep])))
                        break
                else:
                    stack.pop()
                    status[name] = "done"
                    order.append(name)
        return order

    def equation(self, name: str) -> Node:
        """Lower one equation; the ones it uses are already lowered (see equation_order)."""
        if name not in self.env:
            self.env[name] = self.expr(self.cell.equations[name].expr, name)
        return self.env[name]

    def expr(self, e: Expr, name: str | None = None) -> Node:
        """Lower an expression; `name` names the node that computes the whole of it."""
        if isinstance(e, Num):
            return self.node("const", [], e.loc, {"value": e.value}, name=name)
        if isinstance(e, Name):
            return self.name(e)
        if isinstance(e, Neg):
            return self.node("neg", [self.expr(e.operand)], e.loc, name=name)
        if isinstance(e, BinOp):
            if e.op == "@":
                return self.matvec(e, name)
            return self.node(_BINARY[e.op], [self.expr(e.lhs), self.expr(e.rhs)], e.loc, name=name)
        if isinstance(e, Call):
            return self.call(e, name)
        raise AssertionError(e)

    def name(self, e: Name) -> Node:
        if e.id in self.env:
            self.referenced.add(e.id)
            return self.env[e.id]
        if e.id in ops.SPEC_FUNCTIONS:
            raise SpecError(f"`{e.id}` is a function; call it as {e.id}(...)", e.loc)
        if e.id in self.cell.sizes:
            raise SpecError(f"`{e.id}` is a size symbol, not a value", e.loc)
        if e.id.lower() in ("inf", "nan", "infinity"):
            raise SpecError(
                f"`{e.id}` is not a number a spec can use: numbers are finite decimals "
                "(2, 0.5, .5, 1e-5)",
                e.loc,
            )
        known = list(self.env) + list(self.cell.equations)
        raise SpecError(f"unknown name `{e.id}`{did_you_mean(e.id, known)}", e.loc)

    def matvec(self, e: BinOp, name: str | None) -> Node:
        lhs = self.expr(e.lhs)
        if lhs.op != "param" or len(lhs.shape) != 2:
            kind = f"a vector {shape_str(lhs.shape)}" if lhs.shape else "a scalar"
            who = f"the {lhs.op} `{lhs.attrs['name']}`, " if "name" in lhs.attrs else ""
            raise SpecError(
                f"the left side of `@` must be a matrix param; got {who}{kind}"
                + (" (write `W @ v`, matrix first)" if len(lhs.shape) == 1 else ""),
                e.loc,
            )
        rhs = self.expr(e.rhs)
        if not rhs.shape:
            raise SpecError("the right side of `@` must be a vector, got a scalar", e.loc)
        return self.node("matvec", [lhs, rhs], e.loc, name=name)

    def call(self, e: Call, name: str | None) -> Node:
        if e.func not in ops.SPEC_FUNCTIONS:
            raise SpecError(
                f"unknown function `{e.func}`{did_you_mean(e.func, ops.SPEC_FUNCTIONS)}; known: "
                + ", ".join(sorted(ops.SPEC_FUNCTIONS)),
                e.loc,
            )
        op, arity = ops.SPEC_FUNCTIONS[e.func]
        if arity is not None and len(e.args) != arity:
            raise SpecError(
                f"{e.func}() takes {arity} argument{'s' * (arity != 1)}, got {len(e.args)}", e.loc
            )
        args = [self.expr(a) for a in e.args]
        attrs = {"eps": LAYER_NORM_EPS} if op == "layer_norm" else None
        return self.node(op, args, e.loc, attrs, name=name)


def _equations_used(expr: Expr, equations) -> list[str]:
    """The equation names an expression refers to, in the order lowering meets them."""
    found: list[str] = []
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Name):
            if e.id in equations and e.id not in found:
                found.append(e.id)
        elif isinstance(e, Neg):
            stack.append(e.operand)
        elif isinstance(e, BinOp):
            stack += [e.rhs, e.lhs]
        elif isinstance(e, Call):
            stack += reversed(e.args)
    return found


def lower(cell: Cell) -> Graph:
    """Build the (unoptimized) IR of one timestep of `cell`. Raises SpecError."""
    return _Lowering(cell).run()
