"""simplify: algebraic identities as local rewrite rules.

Every rule is exact in IEEE arithmetic (NaN and ±inf included), so results stay bit-for-bit
what the interpreter gives up to rounding of the rewritten op:

    x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0  ->  x       (only when x already has the result's
                                                         shape, so no broadcast is lost)
    identity(x)                                 ->  x
    -(-x)                                       ->  x
    1 - sigmoid(a)                              ->  sigmoid(-a)   (no cancellation near 1)
    0 - x                                       ->  -x

Not done: x * 0 -> 0 (wrong for NaN and inf).
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


def _add_zero(g: Graph, n: Node):
    a, b = n.operands
    # x + 0 is x except that -0 + 0 = +0; only the sign of a zero differs, never a value.
    if is_const(b, 0.0):
        return _keep_if_shape(n, a)
    if is_const(a, 0.0):
        return _keep_if_shape(n, b)
    return None


def _sub(g: Graph, n: Node):
    a, b = n.operands
    if is_const(b, 0.0):
        return _keep_if_shape(n, a)
    if is_const(a, 1.0) and b.op == "sigmoid" and b.shape == n.shape:
        neg = g.add("neg", [b.operands[0]], name="neg")
        return g.add("sigmoid", [neg], name=n.name + "_s")
    if is_const(a, 0.0) and b.shape == n.shape:
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
