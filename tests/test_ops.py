"""The op registry is complete: every op has a rule for every target, and a spec that uses
every op generates code for every target at every optimization level."""

from __future__ import annotations

import pytest

import lstmc
from lstmc.codegen.cpu import CpuEmitter
from lstmc.compiler import generate_source, optimize
from lstmc.ir import ops

EVERY_OP = """\
cell: every_op
doc: Uses every function and operator of the spec language.
sizes: [input, hidden]
inputs: {x: [input]}
state: {h: [hidden], c: [hidden]}
params:
  W: [hidden, hidden + input]
  V: [hidden, input]
  U: [hidden, hidden]
  b: [hidden]
  gamma: {shape: [hidden], init: ones}
  beta: {shape: [hidden], init: zeros}
constants: {lim: 2.5}
equations:
  a: sigmoid(W @ concat(h, x) + b) * tanh(V @ x) - relu(U @ h) / (1 + abs(c))
  e: hard_sigmoid(a) + softsign(a) + softplus(-a) + exp(-abs(a)) + log(1 + abs(a))
  m: max(identity(e), -c) + min(e, c) + clip(e, -lim, lim)
  n: layer_norm(m, gamma, beta)
  h_next: tanh(n) * (1 - sigmoid(a))
update: {h: h_next, c: m}
outputs: [h_next, e]
"""


def test_every_op_has_a_rule_for_every_target():
    for name, opdef in ops.REGISTRY.items():
        for target in ops.TARGETS:
            rule = opdef.codegen.get(target)
            assert rule is not None, f"{name} has no {target} rule"
            if opdef.kind == "elementwise":
                assert isinstance(rule, ops.Rule)
                rule.expr.format(*[f"v{i}" for i in range(opdef.arity)])
                assert rule.helper is None or rule.helper in ops.HELPERS
            else:
                assert rule == ops.STRUCTURAL
        if opdef.kind != "elementwise":
            assert hasattr(CpuEmitter, f"emit_{name}"), f"the CPU target lacks emit_{name}"


def test_the_every_op_spec_covers_the_registry():
    cell = lstmc.loads(EVERY_OP, "every_op.yaml")
    seen = set()
    for opt in (0, 2, 3):
        graph, _ = optimize(cell, opt)
        seen |= {n.op for n in graph.nodes()}
    assert seen == set(ops.REGISTRY), f"not covered: {set(ops.REGISTRY) - seen}"


@pytest.mark.parametrize("target", ops.TARGETS)
@pytest.mark.parametrize("opt", [0, 1, 2, 3])
def test_every_op_generates_code(target, opt):
    cell = lstmc.loads(EVERY_OP, "every_op.yaml")
    for dtype in ("float32", "float64"):
        source, _, _ = generate_source(cell, target, dtype, opt)
        compile(source, f"<every_op {target} -O{opt}>", "exec")  # valid Python


@pytest.mark.parametrize("lim", [2.5, -3.0])  # -3: clip(e, 3, -3), lo > hi: hi wins
@pytest.mark.parametrize("opt", [0, 2])
def test_every_op_runs_like_the_interpreter_on_the_cpu(opt, lim):
    import numpy as np

    cell = lstmc.loads(EVERY_OP, "every_op.yaml").with_constants({"lim": lim})
    kernel = lstmc.compile(cell, dtype="float64", opt=opt)
    rng = np.random.default_rng(0)
    params = kernel.init_params(input=3, hidden=5, seed=1)
    x = rng.standard_normal((6, 2, 3))
    state = {"h": rng.standard_normal((2, 5)), "c": rng.standard_normal((2, 5))}
    y, final = kernel(x, params, state)
    y_ref, final_ref = lstmc.interpret(cell, x, params, state)
    # float64 on both sides: rounding only, amplified at most 1/sqrt(1e-5) by the layer_norm
    for k in y_ref:
        np.testing.assert_allclose(y[k], y_ref[k], rtol=1e-10, atol=1e-10)
    for k in final_ref:
        np.testing.assert_allclose(final[k], final_ref[k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("row", ["constant", "large mean"])
def test_the_interpreters_layer_norm_against_torchs(row):
    """The reference itself, float64, where the mean dwarfs the spread: a constant row of
    1e30s normalized to +-1 (x - mean was an ulp of 1e30), not 0, before it was shifted."""
    import numpy as np

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    v = np.full((4, 7), 1e30) if row == "constant" else 1e12 + rng.standard_normal((4, 7))
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    got = ops.REGISTRY["layer_norm"].interp([v, gamma, beta], {"eps": 1e-5}, None)
    want = torch.nn.functional.layer_norm(
        torch.from_numpy(v), (7,), torch.from_numpy(gamma), torch.from_numpy(beta), eps=1e-5
    ).numpy()
    # float64: the deviations of a 1e12-mean row are exact to ~1e-4 (an ulp of 1e12), so
    # both sides agree to what torch's own two-pass mean keeps of them
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 if row == "large mean" else 0)
