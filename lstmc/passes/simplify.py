"""simplify: algebraic identities as local rewrite rules.

Every rule but one is exact in IEEE arithmetic, NaN, ±inf and the sign of a zero included
(1 / x tells -0 from +0), so the results are bit for bit the interpreter's:

    x * 1, 1 * x, x / 1, x + -0, -0 + x, x - 0  ->  x     (only when x already has the result's
                                                         shape, so no broadcast is lost)
    x + 0, 0 + x                                ->  x     (read only by functions equal at -0
                                                         and +0, as sigmoid: a forget bias of 0)
    identity(x)                                 ->  x
    -(-x)                                       ->  x
    -0 - x                                      ->  -x

The one that is not: 1 - sigmoid(a) -> sigmoid(-a). It is exact in real numbers and the more
accurate in floating point, where 1 - sigmoid(a) cancels: 1 - sigmoid(40) is 0 in float64,
sigmoid(-40) 4.2e-18. The two differ by a few ulps of 1 at most, absolutely, but a log or a
division after it can tell them apart.

Not done: x * 0 -> 0 (wrong for NaN and inf); x + 0 -> x elsewhere and 0 - x -> -x (wrong
for -0 and +0: -0 + 0 is +0, and 0 - 0 is +0 where -(0) is -0).
"""

from __future__ import annotations

from lstmc.ir.graph import Graph, Node
from lstmc.passes.manager import PassResult, register
from lstmc.passes.rewrite import graph_rewrite, is_const


def _keep_if_shape(node: Node, x: Node) -> Node | None:
    return x if x.shape == node.shape else None


def _mul_one(g: Graph, n: Node):
    a, b = n.operands
    if is_const(b, 1.0):
        return _keep_if_shape(n, a)
    if is_const(a, 1.0):
        return _keep_if_shape(n, b)
    return None


def _div_one(g: Graph, n: Node):
    a, b = n.operands
    return _keep_if_shape(n, a) if is_const(b, 1.0) else None


# Functions that give the same value at -0 and +0 (sigmoid(-0) = sigmoid(+0) = 0.5): what
# they read may lose the sign of its zero.
_EVEN_AT_ZERO = frozenset({"sigmoid", "hard_sigmoid", "exp", "softplus", "abs"})


def _add_zero(g: Graph, n: Node):
    # x + -0 is x, always; x + +0 is x but where x is -0, which a reader even at zero ignores
    even = all(u.op in _EVEN_AT_ZERO for u in g.users(n))
    for zero, x in ((n.operands[1], n.operands[0]), (n.operands[0], n.operands[1])):
        if is_const(zero, -0.0) or (even and is_const(zero, 0.0)):
            return _keep_if_shape(n, x)
    return None


def _sub(g: Graph, n: Node):
    a, b = n.operands
    if is_const(b, 0.0):
        return _keep_if_shape(n, a)
    if is_const(a, 1.0) and b.op == "sigmoid" and b.shape == n.shape:
        neg = g.add("neg", [b.operands[0]], name="neg")
        return g.add("sigmoid", [neg], name=n.name + "_s")
    if is_const(a, -0.0) and b.shape == n.shape:
        return g.add("neg", [b], name="neg")
    return None


def _identity(g: Graph, n: Node):
    return n.operands[0]


def _double_neg(g: Graph, n: Node):
    (a,) = n.operands
    return a.operands[0] if a.op == "neg" else None


RULES = [
    ("mul", _mul_one),
    ("div", _div_one),
    ("add", _add_zero),
    ("sub", _sub),
    ("identity", _identity),
    ("neg", _double_neg),
]


@register("simplify")
def simplify(graph: Graph) -> PassResult:
    return PassResult(graph, graph_rewrite(graph, RULES))
