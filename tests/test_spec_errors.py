"""Spec diagnostics: golden messages, the number grammar, and the DESIGN.md LSTM.

Every `tests/golden/errors/NAME.yaml` must fail to load (or lower) with exactly the message in
`NAME.expected`, located as `NAME.yaml:line:col`. To regenerate the expected files after a
deliberate change of wording, run

    LSTMC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_spec_errors.py

and review the diff (check each line:col by eye: it must point at the offending text).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import lstmc
from lstmc.errors import SpecError

GOLDEN = Path(__file__).parent / "golden" / "errors"
UPDATE = os.environ.get("LSTMC_UPDATE_GOLDEN") == "1"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def spec_error(text: str, filename: str = "spec.yaml") -> SpecError:
    """The SpecError that loading and lowering `text` raises."""
    with pytest.raises(SpecError) as info:
        lstmc.to_ir(lstmc.loads(text, filename))
    return info.value


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # keep CRLF line ends as they are


@pytest.mark.parametrize("name", CASES)
def test_golden_error(name):
    err = spec_error(read(GOLDEN / f"{name}.yaml"), f"{name}.yaml")
    expected = GOLDEN / f"{name}.expected"
    if UPDATE:
        expected.write_text(str(err) + "\n", encoding="utf-8")
        return
    assert str(err) == expected.read_text(encoding="utf-8").rstrip("\n")
    loc = err.location
    assert loc is not None and str(err).startswith(f"{name}.yaml:{loc.line}:{loc.col}: error: ")


def test_golden_files_pair_up_and_differ():
    expected = sorted(p.stem for p in GOLDEN.glob("*.expected"))
    assert expected == CASES, "every NAME.yaml needs a NAME.expected and vice versa"
    messages = {re.sub(r"`[^`]*`", "`_`", read(GOLDEN / f"{n}.expected")) for n in CASES}
    assert len(CASES) >= 20 and len(messages) >= 20


def test_golden_locations_point_into_the_file():
    for name in CASES:
        text = read(GOLDEN / f"{name}.yaml")
        m = re.match(rf"{re.escape(name)}\.yaml:(\d+):(\d+): ", read(GOLDEN / f"{name}.expected"))
        line, col = int(m[1]), int(m[2])
        lines = text.replace("\r\n", "\n").split("\n")
        assert 1 <= line <= len(lines), name
        assert 1 <= col <= len(lines[line - 1]) + 1, name


def test_load_from_a_file_names_the_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(read(GOLDEN / "misspelled_name.yaml"))
    with pytest.raises(SpecError) as info:
        lstmc.to_ir(lstmc.load(path))
    assert str(info.value).startswith(f"{path}:22:30: error: unknown name `hh`")


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        lstmc.load(tmp_path / "nope.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes("cell: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8") as info:
        lstmc.load(path)
    assert (info.value.location.line, info.value.location.col) == (1, 10)  # where \xe9 is
    # the same from bytes given to loads, which reads them as UTF-8
    with pytest.raises(SpecError, match="not UTF-8") as info:
        lstmc.loads(b"doc: x\ncell: caf\xe9\n", "b.yaml")
    assert str(info.value).startswith("b.yaml:2:10: error: the spec is not UTF-8 text")
    with pytest.raises(SpecError, match="not UTF-8") as info:  # columns count characters
        lstmc.loads("doc: é".encode() + b"\xff\n", "b.yaml")
    assert str(info.value).startswith("b.yaml:1:7: error:")
    text = (Path(lstmc.cells.path("rnn_tanh"))).read_bytes()
    assert lstmc.loads(text).name == "rnn_tanh"
    with pytest.raises(SpecError, match="a spec is text"):
        lstmc.loads(3)


@pytest.mark.parametrize(
    "section, message",
    [
        ("update", "state variable `h` has no update; add `h: <new value>`"),
        ("outputs", "`outputs` must name at least one equation"),
        ("state", "a recurrent cell needs at least one state variable"),
        ("inputs", "a cell takes exactly one input vector, `inputs` declares 0"),
    ],
)
def test_a_section_left_empty_gets_its_own_message(section, message):
    """`update:` with nothing under it says which state has no update (it said "`update`
    must be a mapping"), `outputs:` that it names nothing (it said "output `` is not an
    equation"), as `state: {}` and `inputs: {}` did already."""
    text = lstmc.cells.path("rnn_tanh").read_text()
    lines, kept, skipping = text.splitlines(), [], False
    for ln in lines:  # the section's key alone, its lines under it dropped
        if ln.startswith(f"{section}:"):
            kept.append(f"{section}:")
            skipping = True
        elif not (skipping and ln.startswith((" ", "-"))):
            skipping = False
            kept.append(ln)
    with pytest.raises(SpecError) as info:
        lstmc.loads("\n".join(kept) + "\n", "e.yaml")
    assert message in str(info.value)
    assert kept[info.value.location.line - 1].startswith(f"{section}:")


# -- the number grammar -------------------------------------------------------------------------

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
constants:
  k: {const}
equations:
  h_next: tanh(W @ x + U @ h) * k * {number}
update:
  h: h_next
outputs: [h_next]
"""
GOOD = {"2": 2.0, "0.5": 0.5, ".5": 0.5, "1e-5": 1e-5, "3E+2": 300.0, "5.": 5.0, "0": 0.0,
        "1E3": 1000.0, "007": 7.0, "2.5e-3": 2.5e-3}  # fmt: skip
BAD = ["0x10", "1_000", "1.2.3", "inf", "nan", "1e", "1e+", "1e999", "0b1", "1j", "0o7", "٣",
       "²", "Infinity", "NaN", "1__0", "..5", "1.5.", "1e5e5"]  # fmt: skip


def const_values(graph) -> dict[str, float]:
    return {n.name: n.attrs["value"] for n in graph.nodes() if n.op == "const"}


@pytest.mark.parametrize("text", sorted(GOOD))
def test_numbers_accepted_in_equations(text):
    graph = lstmc.to_ir(lstmc.loads(RNN.format(const="1", number=text)))
    assert GOOD[text] in const_values(graph).values()


@pytest.mark.parametrize("text", sorted(GOOD) + ["-0.5", "+2", "-1e-5"])
def test_numbers_accepted_in_constants(text):
    graph = lstmc.to_ir(lstmc.loads(RNN.format(const=text, number="1")))
    assert const_values(graph)["k"] == float(text)


@pytest.mark.parametrize("text", BAD)
def test_numbers_rejected_in_equations(text):
    err = spec_error(RNN.format(const="1", number=text))
    assert err.location.line == 13
    line = RNN.splitlines()[12].replace("{number}", text)
    # The error points at the number itself (for `inf`/`nan` at the name, for non-ASCII at it).
    assert line[err.location.col - 1 :].startswith(text[0]), str(err)


@pytest.mark.parametrize("text", BAD + ["- 1", "1 2", "", "two", "[1]", "{a: 1}"])
def test_numbers_rejected_in_constants(text):
    err = spec_error(RNN.format(const=text, number="1"))
    assert err.location.line == 11, str(err)


# -- the LSTM of DESIGN.md section 2 --------------------------------------------------------------

DESIGN_LSTM = """\
cell: lstm
doc: Standard LSTM (Hochreiter & Schmidhuber 1997).
sizes: [input, hidden]            # dimension symbols, bound from the arrays at call time
inputs:
  x: [input]                      # one timestep's input vector
state:
  h: [hidden]                     # carried from step to step; zeros unless given
  c: [hidden]
params:                           # learned parameters, shapes in size symbols
  W_i: [hidden, input]
  W_f: [hidden, input]
  W_g: [hidden, input]
  W_o: [hidden, input]
  U_i: [hidden, hidden]
  U_f: [hidden, hidden]
  U_g: [hidden, hidden]
  U_o: [hidden, hidden]
  b_i: [hidden]
  b_f: [hidden]
  b_g: [hidden]
  b_o: [hidden]
equations:                        # in any order; a name may be used once it is defined anywhere
  i: sigmoid(W_i @ x + U_i @ h + b_i)
  f: sigmoid(W_f @ x + U_f @ h + b_f)
  g: tanh(W_g @ x + U_g @ h + b_g)
  o: sigmoid(W_o @ x + U_o @ h + b_o)
  c_next: f * c + i * g
  h_next: o * tanh(c_next)
update:                           # the new value of each state variable
  h: h_next
  c: c_next
outputs: [h_next]                 # what is emitted at every timestep
"""


def test_design_lstm_loads_exactly_as_written():
    cell = lstmc.loads(DESIGN_LSTM, "lstm.yaml")
    assert cell.name == "lstm" and cell.doc == "Standard LSTM (Hochreiter & Schmidhuber 1997)."
    assert list(cell.sizes) == ["input", "hidden"]
    assert list(cell.inputs) == ["x"] and list(cell.state) == ["h", "c"]
    assert list(cell.params) == [f"{k}_{g}" for k in "WUb" for g in "ifgo"]
    assert list(cell.equations) == ["i", "f", "g", "o", "c_next", "h_next"]
    assert {k: v.expr.id for k, v in cell.update.items()} == {"h": "h_next", "c": "c_next"}
    assert cell.output_names == ["h_next"]
    graph = lstmc.to_ir(cell)
    assert len(graph.find("matvec")) == 8 and len(graph.find("sigmoid")) == 3
    shipped = (Path(lstmc.__file__).parent / "cells" / "lstm.yaml").read_text()
    assert shipped == DESIGN_LSTM


def test_design_md_block_matches_when_available():
    design = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"
    if not design.exists():
        pytest.skip("DESIGN.md is not next to the repository")
    m = re.search(r"```yaml\n(cell: lstm\n.*?)```", design.read_text(), re.DOTALL)
    assert m and m[1] == DESIGN_LSTM


# -- more diagnostics ---------------------------------------------------------------------------

LSTM_TEXT = DESIGN_LSTM


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  x: [input]", "  x: [input, input]", "`x` must be a vector"),
        ("sizes: [input, hidden]", "sizes: [input, hidden, input]", "`input` is already defined"),
        ("sizes: [input, hidden]", "sizes: input", "`sizes` must be a list"),
        ("cell: lstm", "cell: [lstm]", "the cell name must be a single value"),
        ("cell: lstm", "cell: 2lstm", "`2lstm` is not an identifier"),
        ("cell: lstm", "cell: __main__", "names starting with `__` are not allowed"),
        ("cell: lstm", "cell: class", "`class` is a Python keyword"),
        ("doc: Standard", "doc: [Standard", "invalid YAML"),
        ("  b_o: [hidden]", "  b_o: {shape: [hidden], init: ones, init: zeros}", "defined twice"),
        ("outputs: [h_next]", "outputs: []", "`outputs` must name at least one equation"),
        ("outputs: [h_next]", "outputs: {h_next: 1}", "`outputs` must be a list"),
        ("  h: h_next\n", "  h: h_next\n  h: c_next\n", "`h` is defined twice in `update`"),
        ("c_next: f * c + i * g", "c_next: f * c + i * g + W_i", "a matrix [hidden, input]"),
        ("h_next: o * tanh(c_next)", "h_next: o * tanh(c_next) + 1 @ h", "left side of `@`"),
        ("h_next: o * tanh(c_next)", "h_next: layer_norm(o, b_o, x)", "beta must have the size"),
        ("h_next: o * tanh(c_next)", "h_next: concat(o)", "concat needs at least two"),
        ("h_next: o * tanh(c_next)", "h_next: o * exp()", "exp() takes 1 argument, got 0"),
        ("h_next: o * tanh(c_next)", "h_next: o * tanh(c_next))", "unexpected `)`"),
        ("h_next: o * tanh(c_next)", "h_next: o * ()", "empty parentheses"),
        ("h_next: o * tanh(c_next)", "h_next: o * tanh(c_next) = 1", "comparisons"),
        ("h_next: o * tanh(c_next)", "h_next: '{o}'", "dicts and sets"),
        ("h_next: o * tanh(c_next)", "h_next: o;", "unexpected character `;`"),
        ("h_next: o * tanh(c_next)", "h_next: o * tanh(c_next) \u200b", "U+200B"),
        ("h_next: o * tanh(c_next)", "h_next: o * tanh(c_next)\x00", "U+0000"),
        ("h_next: o * tanh(c_next)", "h_next: o *\u00a0c", "U+00A0"),
    ],
)
def test_more_spec_errors(old, new, message):
    assert old in LSTM_TEXT
    err = spec_error(LSTM_TEXT.replace(old, new, 1))
    assert message in str(err)
    assert err.location is not None


def test_unknown_constant_override():
    cell = lstmc.loads(RNN.format(const="1", number="2"))
    assert const_values(lstmc.to_ir(cell, constants={"k": 3.0}))["k"] == 3.0
    with pytest.raises(
        SpecError, match=r"unknown constant `kk` given for cell `\w+` \(did you mean `k`\?\)"
    ):
        lstmc.to_ir(cell, constants={"kk": 3.0})


LEAKY = """\
cell: leaky
sizes: [input]
inputs:
  x: [input]
state:
  h: [input]
params: {params}
constants: {constants}
equations:
  h_next: 0.5 * h + 0.5 * tanh(x)
update:
  h: h_next
outputs: [h_next]
"""


@pytest.mark.parametrize("empty", ["{}", "", "~", "null"])
def test_empty_params_and_constants_sections_are_allowed(empty):
    graph = lstmc.to_ir(lstmc.loads(LEAKY.format(params=empty, constants=empty)))
    assert not graph.find("param") and len(graph.find("const")) == 2


def test_equations_may_be_declared_in_any_order():
    lines = LSTM_TEXT.splitlines()
    start = lines.index("equations:                        # in any order; a name may be used "
                        "once it is defined anywhere") + 1  # fmt: skip
    shuffled = lines[:start] + lines[start : start + 6][::-1] + lines[start + 6 :]
    assert lstmc.to_ir(lstmc.loads("\n".join(shuffled)))


def test_long_equation_chains_do_not_exhaust_the_stack():
    eqs = "\n".join(f"  e{i}: tanh(e{i - 1})" for i in range(1, 2000))
    text = RNN.format(const="1", number="1").replace(
        "  h_next: tanh(W @ x + U @ h) * k * 1", f"  e0: W @ x + U @ h * k\n{eqs}\n  h_next: e1999"
    )
    graph = lstmc.to_ir(lstmc.loads(text))
    assert len(graph.find("tanh")) == 1999


def test_a_cycle_through_many_equations_is_reported():
    eqs = "\n".join(f"  e{i}: tanh(e{i + 1})" for i in range(500))
    text = RNN.format(const="1", number="1").replace(
        "  h_next: tanh(W @ x + U @ h) * k * 1",
        f"{eqs}\n  e500: e0 + W @ x + U @ h * k\n  h_next: e0",
    )
    err = spec_error(text)
    assert "cycle: e0 -> e1 -> " in str(err) and err.location.line == 13


def test_deeply_nested_yaml_is_an_error_not_a_crash():
    err = spec_error("cell: " + "[" * 5000 + "]" * 5000 + "\n")
    assert err.location is not None
