"""Read the IR text form written by `printer.py` back into a Graph.

Used by tests (a pass's input and expected output written as IR text) and by the round-trip
property. Shapes of non-source nodes are recomputed by the op's shape rule and must match the
printed ones.
"""

from __future__ import annotations

import json
import re

from lstmc.errors import VerifyError
from lstmc.ir import ops
from lstmc.ir.graph import Graph, Node
from lstmc.ir.shapes import Size

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<size><[^>]*>)|(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)'
    r"|(?P<word>-?[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[{}\[\],=]))"
)
_LINE = re.compile(r"^%(?P<name>\w+) = (?P<op>\w+)(?P<rest>.*) : \[(?P<shape>[^\]]*)\]$")


class _Values:
    def __init__(self, text: str, lineno: int):
        self.tokens = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise VerifyError(f"line {lineno}: cannot read {text[pos:]!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.lineno = lineno

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self, expected=None):
        tok = self.peek()
        if tok[0] is None or (expected and tok[1] != expected):
            raise VerifyError(f"line {self.lineno}: expected {expected or 'a value'}, got {tok[1]}")
        self.i += 1
        return tok

    def value(self):
        kind, text = self.take()
        if kind == "str":
            return json.loads(text)
        if kind == "size":
            return Size.parse(text[1:-1])
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "word":
            special = {
                "true": True,
                "false": False,
                "inf": float("inf"),
                "-inf": float("-inf"),
                "nan": float("nan"),
            }
            if text in special:
                return special[text]
        if text == "{":
            self.i -= 1
            return self.attrs()
        if text == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.value())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return items
        raise VerifyError(f"line {self.lineno}: unexpected {text!r}")

    def finish(self) -> None:
        """Fail if anything is left on the line."""
        if self.i < len(self.tokens):
            raise VerifyError(f"line {self.lineno}: unexpected {self.tokens[self.i][1]!r}")

    def attrs(self) -> dict:
        out = {}
        if self.peek()[1] != "{":
            return out
        self.take("{")
        while self.peek()[1] != "}":
            kind, key = self.take()
            if kind == "str":
                key = json.loads(key)
            self.take("=")
            out[key] = self.value()
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        return out


def _shape(text: str, lineno: int) -> tuple:
    try:
        return tuple(Size.parse(p) for p in text.split(",")) if text.strip() else ()
    except ValueError as exc:
        raise VerifyError(f"line {lineno}: {exc}") from None


def parse_graph(text: str) -> Graph:
    """Read IR text (as `print_graph` writes it) into a Graph. Raises VerifyError naming the
    line on anything malformed."""
    graph = Graph()
    defined: dict[str, Node] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("    <-- here")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("cell "):
            graph.attrs["cell"] = line[5:].strip()
            continue
        if line.startswith("sizes"):
            graph.attrs["sizes"] = [s.strip() for s in line[5:].split(",") if s.strip()]
            continue
        if line.startswith("attrs"):
            values = _Values(line[5:], lineno)
            graph.attrs.update(values.attrs())
            values.finish()
            continue
        m = _LINE.match(line)
        if not m:
            raise VerifyError(f"line {lineno}: not an IR line: {line!r}")
        if m["op"] not in ops.REGISTRY:
            raise VerifyError(f"line {lineno}: unknown op `{m['op']}`")
        rest = m["rest"].strip()
        operands = []
        while rest.startswith("%"):
            om = re.match(r"%(\w+)\s*,?\s*", rest)
            if om is None:
                raise VerifyError(f"line {lineno}: cannot read {rest!r}")
            if om[1] not in defined:
                raise VerifyError(f"line {lineno}: %{om[1]} is used before it is defined")
            operands.append(defined[om[1]])
            rest = rest[om.end() :]
        values = _Values(rest, lineno)
        attrs = values.attrs()
        values.finish()
        shape = _shape(m["shape"], lineno)
        opdef = ops.get(m["op"])
        if opdef.kind == "source" and m["op"] != "const":
            attrs["shape"] = shape
        if m["name"] in defined:
            raise VerifyError(f"line {lineno}: %{m['name']} is defined twice")
        try:
            node = graph.add(m["op"], operands, attrs, name=m["name"])
        except (ops.ShapeError, KeyError, TypeError, ValueError) as exc:
            raise VerifyError(f"line {lineno}: {m['op']}: {exc}") from None
        defined[node.name] = node
        if node.shape != shape:
            raise VerifyError(
                f"line {lineno}: printed shape [{m['shape']}] but the op gives "
                f"{list(map(str, node.shape))}"
            )
    return graph
