"""``--hvp diff``: second derivatives by central differences of first-order gradients,
against the double backward (``--hvp exact``) as the oracle, on logreg, a small smooth
BN cifarnet and (documented, not bounded) the ReLU one; the lean weighted batch norm
the differences use; the setting's place in the configuration and the identities."""

from __future__ import annotations

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest
from synth import make_dataset, mnist5k_subset

from sgd_influence import cli, presets, store, view
from sgd_influence import config as C
from sgd_influence.engine import Engine, prepare
from sgd_influence.methods import GradientOps, walk
from sgd_influence.methods import get as method
from sgd_influence.methods.grads import DIFF_U, diff_step
from sgd_influence.methods.influence_function import influence_scores
from sgd_influence.models import ModelSpec, input_variables, sample_losses
from sgd_influence.trajectory import make_record, replay


def _rel(a, b) -> float:
    a = np.concatenate([np.ravel(x) for x in a]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in b]).astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_step_rule():
    eps = diff_step(30.0, 2.0)
    assert eps == pytest.approx(0.1 * DIFF_U ** (1 / 3) * 30.0 / 2.0)
    assert diff_step(0.01, 2.0) == pytest.approx(0.1 * DIFF_U ** (1 / 3) / 2.0)  # |theta| < 1: 1
    assert diff_step(30.0, 0.0) == 1.0


def _trained(model: str, smooth: bool = True, width: int = 4, n: int = 64, lr: float = 0.05):
    """An engine after 3 epochs (the last at lr / 5), its record and the parameters
    before each step of the last epoch (Hara's theta_t)."""
    data = prepare(mnist5k_subset(n, 100, 10), 0)
    eng = Engine(ModelSpec(model, data.in_shape, data.num_classes, width, smooth=smooth), 0, data,
                 augment=False)
    rec = make_record(0, n, 3, 16, lr, "step", lr / 5, 1)
    replay(eng, rec, range(rec.window(1).start))
    thetas = {}
    for s in rec.window(1):
        thetas[s] = eng.net.get_flat()
        replay(eng, rec, [s])
    return eng, rec, thetas


@pytest.fixture(scope="module")
def smooth_run():
    return _trained("cifarnet")


def _walk_errors(eng, rec, thetas, bn_influence: str) -> tuple[float, np.ndarray, np.ndarray]:
    state = eng.net.state_dict()
    scores = {m: walk(GradientOps(eng, hvp=m), rec, rec.window(1), thetas.__getitem__,
                      bn_influence=bn_influence)[0] for m in ("exact", "diff")}
    after = eng.net.state_dict()
    for k in state:  # the perturbations leave every array as it was, bit for bit
        np.testing.assert_array_equal(after[k], state[k], err_msg=k)
    return _rel([scores["diff"]], [scores["exact"]]), scores["diff"], scores["exact"]


def test_logreg_walk_and_hvp_by_differences_match_double_backward():
    eng, rec, thetas = _trained("logreg", lr=0.005)
    x, y = eng.train_inputs(*rec.batch(rec.n_steps - 1))
    u = [np.random.default_rng(1).standard_normal(p.shape).astype(np.float32)
         for p in eng.net.trainable.values()]
    exact, diff = GradientOps(eng), GradientOps(eng, hvp="diff")
    assert _rel(diff.hvp(x, y, u), exact.hvp(x, y, u)) < 1e-3  # measured 5e-5
    fused = diff.step_terms(x, y, u)
    assert _rel([fused[0]], [exact.step_terms(x, y, u)[0]]) < 1e-3
    rel = _walk_errors(eng, rec, thetas, "exact")[0]
    print(f"logreg: scores relative error {rel:.2e}")
    assert rel < 1e-3  # measured 1.4e-4


def test_if_by_differences_matches_double_backward():
    """IF's conjugate gradient over difference HVPs (logreg, convex: CG runs to its
    tolerance or its iterations on either)."""
    data = prepare(make_dataset(60, 30, 10), 0)
    eng = Engine(ModelSpec("logreg", data.in_shape, data.num_classes), 0, data, augment=False)
    replay(eng, make_record(0, 60, 2, 20, 0.01), range(6))
    got = {m: influence_scores(GradientOps(eng, hvp=m), 1.0, 20, 20)[0] for m in ("exact", "diff")}
    assert _rel([got["diff"]], [got["exact"]]) < 1e-3


@pytest.mark.parametrize("bn_influence", ["exact", "reference"])
def test_smooth_bn_walk_by_differences_matches_double_backward(smooth_run, bn_influence):
    """Smooth cifarnet (softplus, average pooling) with BN: both walks. Measured relative
    error of the scores: 4e-4 (exact BN), 3e-5 (reference)."""
    eng, rec, thetas = smooth_run
    rel, diff, exact = _walk_errors(eng, rec, thetas, bn_influence)
    print(f"smooth cifarnet, --bn-influence {bn_influence}: scores relative error {rel:.2e}")
    assert rel < 1e-2
    assert np.corrcoef(diff, exact)[0, 1] > 0.9999


def test_weighted_per_sample_terms_by_differences_equal_the_batch_one_loop(smooth_run):
    """The GPU path's per-sample terms (instance-normalised BN) by differences."""
    eng, rec, _ = smooth_run
    x, y = eng.train_inputs(*rec.batch(0))
    u = [np.random.default_rng(4).standard_normal(p.shape).astype(np.float32)
         for p in eng.net.trainable.values()]
    ops = GradientOps(eng, hvp="diff")
    loop = ops.per_sample_dots(x, y, u, mode="loop")
    assert np.max(np.abs(ops.per_sample_dots(x, y, u, mode="weighted") - loop)) < 1e-2 * np.max(np.abs(loop))


FLAT_BN = '''
import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    h = F.softplus(norm(PF.affine(x, 16, name="fc1"), "n1", eps=1e-3, decay_rate=0.8), beta=5.0)
    return PF.affine(h, num_classes, name="fc2")
'''


def test_exact_step_by_differences_on_batch_norm_after_an_affine_layer(tmp_path):
    """Batch norm of (B, C) activations (no positions): the exact step's both outputs."""
    (tmp_path / "flat.py").write_text(FLAT_BN)
    data = prepare(mnist5k_subset(32, 10, 10), 0)
    eng = Engine(ModelSpec(f"{tmp_path / 'flat.py'}:net", data.in_shape, data.num_classes), 0, data,
                 augment=False)
    replay(eng, make_record(0, 32, 2, 16, 0.05), range(3))
    x, y = eng.train_inputs(np.arange(16), None)
    exact, diff = GradientOps(eng), GradientOps(eng, hvp="diff")
    a_theta, a_r = exact.val_gradient_exact()
    (te, de), (td, dd) = (ops.exact_step_terms(x, y, a_theta, a_r, 0.05) for ops in (exact, diff))
    assert _rel(dd, de) < 1e-2 and _rel([td], [te]) < 1e-2


def test_relu_bn_walk_by_differences_documents_its_error():
    """The ReLU / max-pool cifarnet: the double backward differentiates each piece of a
    piecewise-linear network, the differences step across its kinks (max pooling's
    choices and ReLU's switches among them); the scores differ by as much as they are
    large (measured: relative error 1.0 against 4e-4 on the smooth network, Kendall tau
    0.45 between the two). The numbers are printed, not bounded from above; which of the
    two predicts retraining better is measured in docs/results.md."""
    from scipy.stats import kendalltau

    rel_relu, diff, exact = _walk_errors(*_trained("cifarnet", smooth=False), "exact")
    tau = kendalltau(diff, exact)[0]
    print(f"ReLU cifarnet: scores relative error {rel_relu:.2e}, tau {tau:.3f}")
    assert rel_relu > 1e-2 and np.all(np.isfinite(diff))  # beyond the smooth network's bound


def test_lean_batch_norm_has_the_first_derivatives_of_the_weighted_one():
    """At w = 1: the same loss, gradient in theta and in w, with the running-statistic
    terms, as the basic-function weighted batch norm (float32 rounding apart)."""
    data = prepare(mnist5k_subset(16, 10, 10), 0)
    eng = Engine(ModelSpec("cifarnet", data.in_shape, data.num_classes, 4, smooth=True), 0, data,
                 augment=False)
    params = list(eng.net.trainable.values())
    x, y = eng.train_inputs(np.arange(16), None)
    out = {}
    for lean in (False, True):
        xi, ti = input_variables(16, data.in_shape)
        w = nn.Variable((16, 1), need_grad=True)
        stats: list = []
        logits = eng.net.logits(xi, bn="weighted", w=w, stats=stats, lean=lean)
        r = [nn.Variable.from_numpy_array(np.random.default_rng(i).standard_normal(v.shape).astype(np.float32))
             for i, v in enumerate(v for pair in stats for v in pair)]
        phi = F.add_n(F.sum(sample_losses(logits, ti) * w) / 16,
                      *[F.sum(v * c) for v, c in zip((v for pair in stats for v in pair), r)])
        xi.d, ti.d, w.d = x, y, 1.0
        phi.forward(clear_no_need_grad=True)
        for p in params:
            p.grad.zero()
        w.grad.zero()
        phi.backward(clear_buffer=True)
        out[lean] = (float(phi.d), [p.g.copy() for p in params], w.g.copy())
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    for a, b, name in zip(out[True][1], out[False][1], eng.net.trainable):
        assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max() + 1e-7, name  # measured <= 1e-4
    assert np.abs(out[True][2] - out[False][2]).max() <= 1e-4 * np.abs(out[False][2]).max()


def test_hvp_setting_is_a_method_setting(tmp_path):
    C.Config(hvp="diff").validate()
    with pytest.raises(ValueError, match="^--hvp: expected auto, exact or diff, got 'fast'$"):
        C.Config(hvp="fast").validate()
    cfg = C.Config(hvp="diff")
    for name in ("Hara", "Ours", "IF"):
        assert method(name).settings(cfg)["hvp"] == "diff"
    for name in ("TracIn", "Random"):
        assert "hvp" not in method(name).settings(cfg)
    assert "hvp" not in cfg.train_identity()
    assert "hvp" in cli.phase_settings("infl") and "hvp" in cli.phase_settings("eval")
    assert "hvp" not in cli.phase_settings("train") and "width" in cli.phase_settings("train")
    # another --hvp is another key of Hara's results, the same of Random's
    exact = C.Config(hvp="exact")
    assert store.key(view.influence_identity(cfg, "Hara")) != store.key(view.influence_identity(exact, "Hara"))
    assert view.influence_identity(cfg, "Random") == view.influence_identity(exact, "Random")
    assert "--hvp: 'exact' -> 'diff'" in view.describe_diff(view.influence_identity(exact, "Hara"),
                                                            view.influence_identity(cfg, "Hara"))
    with pytest.raises(ValueError, match="--hvp"):
        GradientOps.__init__(object.__new__(GradientOps), None, hvp="fast")


def test_auto_is_diff_only_where_it_was_measured_to_lose_nothing(tmp_path):
    """--hvp auto (the default): differences on the smooth cifarnet and logreg, the double
    backward on every other network; the identity keeps the mode it resolved to, so auto
    and that mode share results."""
    from sgd_influence.methods.grads import hvp_mode

    net = tmp_path / "net.py"
    net.write_text("def net(x, num_classes, norm):\n    import nnabla.parametric_functions as PF\n"
                   "    return PF.affine(x, num_classes)\n")
    assert C.Config().hvp == "auto"
    cases = {"diff": [C.Config(), C.Config(model="logreg"), C.Config(hvp="diff", smooth=False)],
             "exact": [C.Config(smooth=False), C.Config(model="mlp"), C.Config(model=f"{net}:net"),
                       C.Config(**presets.PRESETS["paper"]), C.Config(hvp="exact")]}
    for mode, cfgs in cases.items():
        for cfg in cfgs:
            assert hvp_mode(cfg) == mode, cfg
            for name in ("Hara", "Ours", "IF"):
                assert method(name).settings(cfg)["hvp"] == mode
    for name in ("Hara", "IF"):
        assert view.influence_identity(C.Config(), name) == view.influence_identity(C.Config(hvp="diff"), name)
        assert view.influence_identity(C.Config(), name) != view.influence_identity(C.Config(hvp="exact"), name)
