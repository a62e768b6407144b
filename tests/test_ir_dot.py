"""Graphviz DOT export (lstmc.ir.dot): well-formed, complete, deterministic, pass marks shown.

The text is checked with a small reader of the DOT subset `to_dot` writes (statements,
attribute lists, quoted IDs, clusters); when Graphviz's `dot` is installed it must also render.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import lstmc
from lstmc.cells import names as shipped_names
from lstmc.ir.dot import to_dot

CELLS = shipped_names()
_TOKEN = re.compile(r'\s*(?:(?P<id>"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|-?[0-9.]+)'
                    r"|(?P<punct>->|[{}\[\];=,]))")  # fmt: skip


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot read DOT at {text[pos : pos + 40]!r}"
        out.append(m.group(m.lastgroup))
        pos = m.end()
    return out


def unquote(tok: str) -> str:
    return re.sub(r"\\(.)", r"\1", tok[1:-1]) if tok.startswith('"') else tok


def read_dot(text: str) -> tuple[list[str], list[tuple[str, str, dict]], list[str]]:
    """(node ids, edges (src, dst, attrs), cluster ids) of a DOT digraph; asserts the grammar."""
    toks = tokens(text)
    assert toks[0] == "digraph" and toks[2] == "{" and toks[-1] == "}"
    depth = 0
    for t in toks:
        depth += (t == "{") - (t == "}")
        assert depth >= 0
    assert depth == 0, "unbalanced braces"
    nodes, edges, clusters = [], [], []
    i = 3

    def attr_list(i):
        attrs = {}
        assert toks[i] == "["
        i += 1
        while toks[i] != "]":
            key, eq, value = toks[i : i + 3]
            assert eq == "=", toks[i : i + 3]
            attrs[key] = unquote(value)
            i += 3
            if toks[i] == ",":
                i += 1
        return attrs, i + 1

    while i < len(toks) - 1:
        t = toks[i]
        if t == "}":
            i += 1
            continue
        if t in ("graph", "node", "edge"):
            _, i = attr_list(i + 1)
        elif t == "subgraph":
            clusters.append(unquote(toks[i + 1]))
            assert toks[i + 2] == "{"
            i += 3
            continue
        elif toks[i + 1] == "->":
            attrs = {}
            j = i + 3
            if toks[j] == "[":
                attrs, j = attr_list(j)
            edges.append((unquote(t), unquote(toks[i + 2]), attrs))
            i = j
        else:
            attrs, i = attr_list(i + 1)
            assert "label" in attrs
            nodes.append(unquote(t))
        assert toks[i] == ";", toks[i - 3 : i + 2]
        i += 1
    return nodes, edges, clusters


def check(graph) -> str:
    text = to_dot(graph)
    nodes, edges, _ = read_dot(text)
    assert sorted(nodes) == sorted(n.name for n in graph.nodes())
    assert len(nodes) == len(set(nodes))
    expected = [(o.name, n.name) for n in graph.nodes() for o in n.operands]
    assert sorted((s, d) for s, d, _ in edges) == sorted(expected)
    for n in graph.nodes():
        labels = [a.get("label") for s, d, a in edges if d == n.name]
        if len(n.operands) > 1:
            assert sorted(labels, key=int) == [str(i) for i in range(len(n.operands))]
        else:
            assert labels == [None] * len(n.operands)
    assert to_dot(graph.copy()) == text, "DOT output must be deterministic"
    return text


@pytest.mark.parametrize("name", CELLS)
def test_shipped_cells(name):
    graph = lstmc.to_ir(lstmc.builtin(name))
    text = check(graph)
    assert text.startswith(f'digraph "{name}" {{')
    assert "shape=invhouse" in text and "shape=house" in text and "subgraph" not in text


@pytest.mark.parametrize("name", CELLS)
def test_optimized_cells_show_groups_and_hoisting(name):
    from lstmc.passes import pipeline, run_passes

    graph, _ = run_passes(lstmc.to_ir(lstmc.builtin(name)), pipeline(2))
    text = check(graph)
    _, _, clusters = read_dot(text)
    groups = {n.attrs["group"] for n in graph.nodes() if "group" in n.attrs}
    assert len(clusters) == len(groups)
    if any("hoisted" in n.attrs for n in graph.nodes()):
        assert "hoisted=" in text and "dashed" in text


def test_marks_are_drawn():
    graph = lstmc.to_ir(lstmc.builtin("gru"))
    for n in ("r", "z"):
        graph.node(n).attrs["group"] = 0
    graph.node("n").attrs["group"] = "tail"
    graph.node("r").attrs["hoisted"] = True
    graph.node("z").attrs["hoisted"] = "once"
    text = check(graph)
    _, _, clusters = read_dot(text)
    assert clusters == ["cluster_group_0", "cluster_group_1"]
    assert re.search(r'"r" \[label="r\\nsigmoid\\n\[hidden\]\\ngroup=0\\nhoisted=true"', text)
    assert "group tail" in text


def test_awkward_names_are_quoted():
    spec = """\
cell: node
sizes: [input, hidden]
inputs: {edge: [input]}
state: {graph: [hidden]}
params: {subgraph: [hidden, input], strict: [hidden]}
equations:
  digraph: tanh(subgraph @ edge - strict * graph)
update: {graph: digraph}
outputs: [digraph]
"""
    graph = lstmc.to_ir(lstmc.loads(spec))
    text = check(graph)
    assert text.startswith('digraph "node" {')
    assert '"subgraph" -> "matvec" [label="0"];' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("name", ["lstm", "layernorm_lstm", "mgu"])
def test_graphviz_renders(name):
    from lstmc.passes import pipeline, run_passes

    for level in (0, 3):
        graph, _ = run_passes(lstmc.to_ir(lstmc.builtin(name)), pipeline(level))
        proc = subprocess.run(["dot", "-Tsvg"], input=to_dot(graph).encode(), capture_output=True,
                              timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"<svg" in proc.stdout
