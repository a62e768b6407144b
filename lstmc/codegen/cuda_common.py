"""Shared pieces of the CUDA code generator: the line buffer, the launch plan's records
(`Source`, `Launch`) and the access that reads fused products from dot-product locals."""

from __future__ import annotations

from dataclasses import dataclass, field

from lstmc.codegen.common import Access, Namespace
from lstmc.codegen.schedule import Item, Schedule
from lstmc.ir.graph import Node
from lstmc.ir.shapes import Size

TARGET = "cuda"
PRODUCTS = ("matvec", "packed_matvec")


class Lines:
    """Lines of generated source at an indentation depth (`with L.indent(): ...`)."""

    def __init__(self, depth: int = 0):
        self.lines: list[str] = []
        self.depth = depth

    def add(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    def extend(self, lines: list[str]) -> None:
        for ln in lines:
            self.add(ln)

    def indent(self, n: int = 1):
        lines = self

        class _Ctx:
            def __enter__(self):
                lines.depth += n

            def __exit__(self, *a):
                lines.depth -= n

        return _Ctx()


@dataclass
class Source:
    """The products of one launch that share a right operand: their dot products run over the
    same vector, `cols` are (product, first row) column blocks of their packed weights."""

    vec: Node
    cols: list[tuple[Node, Size]] = field(default_factory=list)


@dataclass
class Launch:
    """One kernel launch of a step (one phase of the persistent kernel)."""

    kind: str  # "fused" | "norm" | "concat" | "copy"
    extent: Size | None = None
    groups: list[Item] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    stores: list[Node] = field(default_factory=list)  # products stored whole (+ their sinks)
    node: Node | None = None  # layer_norm / concat
    sinks: list[Node] = field(default_factory=list)  # copies

    def ncols(self) -> int:
        return sum(len(s.cols) for s in self.sources)

    def columns(self) -> list[tuple[Source, Node, Size]]:
        return [(s, p, off) for s in self.sources for p, off in s.cols]


class CudaAccess(Access):
    """Access that reads fused products from the dot-product locals of the current launch."""

    def __init__(self, sched: Schedule, ns: Namespace, fixed: dict | None):
        super().__init__(sched, ns, fixed)
        self.dots: dict[tuple[str, Size], str] = {}

    def element(self, node: Node, t: str, b: str, j: str, in_group=None, **kw) -> str:
        if node.kind != "source":
            base, off = self.sched.base(node)
            var = self.dots.get((base.name, off))
            if var is not None:
                return var
        return super().element(node, t, b, j, in_group, **kw)
