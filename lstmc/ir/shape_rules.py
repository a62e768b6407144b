"""The shape rules of the IR's ops (lstmc.ir.ops declares which op takes which): each a
function (operand shapes, attrs) -> result shape that raises ShapeError, with a message in
the spec's terms, when the operands don't fit."""

from __future__ import annotations

from lstmc.ir.shapes import Size, shape_str


class ShapeError(Exception):
    """Raised by a shape rule; the caller adds where it happened."""


def declared_shape(shapes, attrs):
    return attrs["shape"]


def same_shape(shapes, attrs):
    return shapes[0]


def _matrix_hint(op: str | None, shapes) -> str:
    """What the writer of an element-wise op on a matrix most likely meant."""
    if op == "mul" and any(len(s) == 1 for s in shapes):
        return " (did you mean `@`, the matrix-vector product?)"
    if op == "neg":
        return " (to negate a product, negate the product: `-(W @ x)`)"
    if op in ("mul", "div"):
        return " (to scale a product, scale the product: `2 * (W @ x)`)"
    if op in ("add", "sub"):
        return " (to add products, add them after `@`: `W @ x + V @ x`)"
    return ""


def elementwise_shape(shapes, attrs, op=None):
    vector = None
    for s in shapes:
        if len(s) == 2:
            raise ShapeError(
                f"a matrix {shape_str(s)} can only be used on the left of `@`; "
                f"element-wise operations take vectors and scalars{_matrix_hint(op, shapes)}"
            )
        if len(s) == 1:
            if vector is not None and s != vector:
                raise ShapeError(
                    f"element-wise operands must have the same size, "
                    f"got {shape_str(vector)} and {shape_str(s)}"
                )
            vector = s
    return vector if vector is not None else ()


def matvec_shape(shapes, attrs):
    w, v = shapes
    if len(w) != 2:
        raise ShapeError(f"the left side of `@` must be a matrix param, got {shape_str(w)}")
    if len(v) != 1:
        kind = "a scalar" if not v else "a matrix"
        raise ShapeError(f"the right side of `@` must be a vector, got {kind} {shape_str(v)}")
    if w[1] != v[0]:
        raise ShapeError(
            f"`@` size mismatch: matrix {shape_str(w)} times vector {shape_str(v)} "
            f"(the matrix's second dimension must equal the vector's size)"
        )
    return (w[0],)


def packed_matvec_shape(shapes, attrs):
    v, *ws = shapes
    rows = Size()
    for w in ws:
        rows = rows + matvec_shape([w, v], attrs)[0]
    return (rows,)


def _vectors(shapes, what, names=None):
    """Every operand a vector; `names` (the operands' roles) say which one is not."""
    for i, s in enumerate(shapes):
        if len(s) != 1:
            got = shape_str(s) if s else "a scalar"
            role = f" (its {names[i]}, argument {i + 1})" if names and i < len(names) else ""
            raise ShapeError(f"{what} takes vectors, got {got}{role}")


def concat_shape(shapes, attrs):
    _vectors(shapes, "concat")
    if len(shapes) < 2:
        raise ShapeError("concat needs at least two vectors")
    total = Size()
    for s in shapes:
        total = total + s[0]
    return (total,)


def layer_norm_shape(shapes, attrs):
    _vectors(shapes, "layer_norm", ("input", "gain gamma", "shift beta"))
    v, gamma, beta = shapes
    for what, s in (("gamma", gamma), ("beta", beta)):
        if s != v:
            raise ShapeError(
                f"layer_norm's {what} must have the size of its input: "
                f"{shape_str(s)} vs {shape_str(v)}"
            )
    return v


def slice_shape(shapes, attrs):
    _vectors(shapes, "slice")
    return (attrs["size"],)


def param_cols_shape(shapes, attrs):
    (w,) = shapes
    if len(w) != 2:
        raise ShapeError(f"param_cols takes a matrix, got {shape_str(w)}")
    return (w[0], attrs["size"])


def clip_shape(shapes, attrs):
    for what, s in (("lower bound", shapes[1]), ("upper bound", shapes[2])):
        if s != ():
            raise ShapeError(f"clip's {what} must be a scalar, got {shape_str(s)}")
    return elementwise_shape(shapes[:1], attrs)
