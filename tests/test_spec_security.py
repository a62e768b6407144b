"""A spec can not run code: every attempt to smuggle some in is a SpecError at its location.

Payloads would create a marker file if they ever ran; each test checks that it does not exist.
They go into equations (quoted, so that YAML hands them to the expression parser whole), into
names of every kind, and as YAML tags at every place a node can stand.
"""

from __future__ import annotations

import ast
import json

import pytest

import lstmc
from lstmc.errors import SpecError

RNN = """\
cell: rnn
sizes: [input, hidden]
inputs:
  x: [input]
state:
  h: [hidden]
params:
  W: [hidden, input]
  U: [hidden, hidden]
  b: [hidden]
equations:
  h_next: tanh(W @ x + U @ h + b)
update:
  h: h_next
outputs: [h_next]
"""


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a spec ran code"


def rejected(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        lstmc.to_ir(lstmc.loads(text, "evil.yaml"))
    err = info.value
    assert err.location is not None
    assert str(err).startswith(f"evil.yaml:{err.location.line}:{err.location.col}: error: ")
    return err


EQUATION_PAYLOADS = [
    "__import__('os').system('touch {m}')",
    '__import__("os").system("touch {m}")',
    "x.__class__",
    "x.__class__.__bases__[0].__subclasses__()",
    "np.exp(x)",
    "lambda: 0",
    "(lambda: __import__('os').system('touch {m}'))()",
    "x[0]",
    "x[::-1]",
    "'touch {m}'",
    "eval('1')",
    "eval(x)",
    "exec(x)",
    "exec",
    "open(x)",
    "getattr(x, y)",
    "__builtins__",
    "globals()",
    "breakpoint()",
    "compile(x)",
    "__import__",
    "os.system",
    "x if x else x",
    "[x for x in x]",
    "{x: x}",
    "x ** 2",
    "x; import os",
    "f'{x}'",
    "x := 1",
    "`x`",
    "$(touch {m})",
    "tanh(x) # trailing",
    "sigmoid.__globals__",
    "tanh(W @ x + U @ h + b) and __import__('os')",
]


@pytest.mark.parametrize("payload", EQUATION_PAYLOADS)
@pytest.mark.parametrize("quote", ["'", '"', "|"])
def test_code_in_equations_is_rejected(payload, quote, marker):
    body = payload.replace("{m}", str(marker))
    if quote == "|":
        value = "|\n    " + body
    else:
        value = quote + body.replace(quote, quote * 2 if quote == "'" else '\\"') + quote
    text = RNN.replace(
        "  h_next: tanh(W @ x + U @ h + b)", f"  y: {value}\n  h_next: tanh(W @ x + U @ h + b)"
    )
    err = rejected(text)
    assert err.location.line in (12, 13)


def test_a_plain_comment_is_not_part_of_the_equation():
    # YAML strips `# ...` from a plain scalar, so this one is the harmless `tanh(x)` ... which
    # has the wrong size for h: still an error, but one about shapes.
    err = rejected(RNN.replace("  h: h_next", "  h: tanh(x) # __import__('os')"))
    assert "shape [input]" in str(err)


@pytest.mark.parametrize(
    "name", ["__import__", "__class__", "__init__", "__builtins__", "__dict__", "__x"]
)
@pytest.mark.parametrize("where", ["cell", "size", "input", "state", "param", "const", "eq"])
def test_dunder_names_are_rejected_everywhere(name, where, marker):
    text = {
        "cell": RNN.replace("cell: rnn", f"cell: {name}"),
        "size": RNN.replace("sizes: [input, hidden]", f"sizes: [input, hidden, {name}]"),
        "input": RNN.replace("  x: [input]", f"  {name}: [input]"),
        "state": RNN.replace("  h: [hidden]", f"  h: [hidden]\n  {name}: [hidden]"),
        "param": RNN.replace("  b: [hidden]", f"  {name}: [hidden]"),
        "const": RNN.replace("equations:", f"constants:\n  {name}: 1\nequations:"),
        "eq": RNN.replace("  h_next: tanh", f"  {name}: b\n  h_next: tanh"),
    }[where]
    err = rejected(text)
    assert "`__` are not allowed" in str(err)


@pytest.mark.parametrize(
    "name", ["class", "import", "lambda", "None", "True", "match", "_", "type", "case"]
)
def test_keyword_names_are_rejected(name):
    """On every Python alike: `type` too, a soft keyword from 3.12 on."""
    err = rejected(RNN.replace("  h_next: tanh", f"  {name}: b\n  h_next: tanh"))
    assert "keyword" in str(err)


def test_the_keyword_lists_cover_this_pythons():
    import keyword

    from lstmc.spec import expr

    assert set(keyword.kwlist) <= expr._PYTHON_KEYWORDS
    assert set(keyword.softkwlist) <= expr._SOFT_KEYWORDS


def test_a_size_named_seed_is_refused_where_it_is_declared():
    err = rejected(RNN.replace("sizes: [input, hidden]", "sizes: [input, hidden, seed]"))
    assert "a size can't be called `seed`" in str(err)
    assert (err.location.line, err.location.col) == (2, 24)


@pytest.mark.parametrize(
    "name", ["os.system", "a b", "x-y", "9lives", "é", "ｘ", "x\\u0000", "\"'x'\"", "x()"]
)
def test_non_identifier_names_are_rejected(name):
    rejected(RNN.replace("cell: rnn", f"cell: {name}"))


TAGS = [
    '!!python/object/apply:os.system ["touch {m}"]',
    '!!python/object/new:os.system ["touch {m}"]',
    "!!python/name:os.system",
    "!!python/module:os",
    '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {m}"]',
    "!!str h_next",
    "!!binary aGk=",
    "!local h_next",
    "! h_next",
]
PLACES = {
    "root": lambda tag: f"--- {tag}\n" + RNN if not tag.startswith("!!str") else f"{tag}\n",
    "cell": lambda tag: RNN.replace("cell: rnn", f"cell: {tag}"),
    "sizes": lambda tag: RNN.replace("sizes: [input, hidden]", f"sizes: {tag}"),
    "size item": lambda tag: RNN.replace("[input, hidden]", f"[input, {tag}]"),
    "shape": lambda tag: RNN.replace("  W: [hidden, input]", f"  W: {tag}"),
    "key": lambda tag: RNN.replace("  b: [hidden]", f"  ? {tag}\n  : [hidden]"),
    "equation": lambda tag: RNN.replace("  h_next: tanh(W @ x + U @ h + b)", f"  h_next: {tag}"),
    "update": lambda tag: RNN.replace("  h: h_next", f"  h: {tag}"),
    "outputs": lambda tag: RNN.replace("outputs: [h_next]", f"outputs: [{tag}]"),
    "doc": lambda tag: RNN.replace("cell: rnn", f"cell: rnn\ndoc: {tag}"),
    "section": lambda tag: RNN.replace("params:\n", f"params: {tag}\n"),
}


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("place", sorted(PLACES))
def test_yaml_tags_are_rejected(tag, place, marker):
    text = PLACES[place](tag.replace("{m}", str(marker)))
    rejected(text)


def test_tag_shorthands_through_a_directive_are_rejected(marker):
    text = f"%TAG !py! tag:yaml.org,2002:python/object/apply:\n---\n{RNN}".replace(
        "cell: rnn", f'cell: !py!os.system ["touch {marker}"]'
    )
    err = rejected(text)
    assert "YAML tags like `!py!os.system`" in str(err) and err.location.line == 3


def test_tag_error_points_at_the_tag():
    err = rejected(RNN.replace("  h: h_next", "  h: !!python/name:os.system"))
    assert (err.location.line, err.location.col) == (14, 6)


def test_anchors_and_aliases_are_only_data():
    text = RNN.replace("  W: [hidden, input]", "  W: &shape [hidden, input]").replace(
        "  x: [input]", "  x: [input]\n"
    )
    text = text.replace("  b: [hidden]", "  b: [hidden]\n  V: *shape").replace(
        "W @ x", "(W @ x + V @ x)"
    )
    graph = lstmc.to_ir(lstmc.loads(text))
    assert graph.node("V").shape == graph.node("W").shape


def test_a_billion_laughs_is_cheap():
    laughs = ["  l0: &l0 [hidden]"] + [
        f"  l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 30)
    ]
    text = RNN.replace("params:\n", "params:\n" + "\n".join(laughs) + "\n")
    rejected(text)  # a shape of shapes; composing never expands the aliases


def test_merge_keys_are_not_merged():
    text = RNN.replace("params:\n", "params:\n  <<: {Z: [hidden]}\n")
    err = rejected(text)
    assert "`<<`" in str(err)


@pytest.mark.parametrize(
    "doc",
    [
        r"LaTeX: $h_t = \tanh(W x_t + \xi)$, \N{bogus}, \u12, a trailing backslash \\",
        'quotes: """triple""", "" and \'\'\' and a last one"',
        "controls: NUL \x00, CR \r, VT \x0b, a line separator \u2028, a surrogate \udc80.",
        '""" + __import__("os").system("touch pwned") + """',
    ],
    ids=["backslashes", "quotes", "controls", "breakout"],
)
def test_the_doc_reaches_the_module_docstring_exactly_as_written(doc, marker):
    """The doc (and the equations) are the only spec text in generated source, inside the
    module docstring: no escape, quote or control character there can break the module or
    end the string (a LaTeX `\\xi` was a SyntaxError)."""
    from lstmc.codegen.module import docstring_text

    source = '"""' + docstring_text(doc) + '\n"""'
    assert ast.literal_eval(source) == doc + "\n"
    # and through a spec (a YAML double-quoted scalar takes JSON's escapes) into a kernel
    text = RNN.replace("cell: rnn\n", f"cell: rnn\ndoc: {json.dumps(doc)}\n")
    kernel = lstmc.compile(lstmc.loads(text), cache=False)
    assert doc.strip() in kernel.__doc__
