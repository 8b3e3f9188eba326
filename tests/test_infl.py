"""Oracle tests of the influence phase: closed-form logreg derivatives, finite
differences on a smooth net, leave-one-out replays, and the equalities between the
per-sample paths."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nnabla.functions as F
import numpy as np
import pytest
from scipy.stats import kendalltau, pearsonr
from synth import make_dataset

from sgd_influence import config as C
from sgd_influence import fileio, paths, preprocess, view
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores, run_influence
from sgd_influence.methods import GradientOps, walk
from sgd_influence.models import ModelSpec, input_variables
from sgd_influence.train import run_training
from sgd_influence.trajectory import (
    Record,
    load_epoch_state,
    load_final_state,
    load_snapshot,
    replay,
)


def _train(tmp_path, model, n_epochs=3, infl_epochs=0, lr=0.01, batch_size=20, n=(200, 100, 100),
           width=4, seed=0, lr_schedule="constant"):
    # the oracle tests check the double backward (--hvp diff is checked against it in test_hvp_diff)
    cfg = C.Config(output=str(tmp_path), model=model, width=width, n_epochs=n_epochs,
                   infl_epochs=infl_epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                   hvp="exact")
    data = prepare(make_dataset(*n, seed=seed), seed)
    view.point(cfg, ("train",), [seed])
    run_training(cfg, seed, data)
    return cfg, data


def _final_engine(cfg, data, seed=0):
    eng = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    eng.net.load_state_dict(load_final_state(cfg.output, seed))
    return eng


def _rel(a, b):
    a, b = np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------- logreg closed forms
def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LogregOracle:
    """Float64 closed-form gradient and Hessian-vector product of softmax regression."""

    def __init__(self, W, b):
        self.W, self.b = W.astype(np.float64), b.astype(np.float64)

    def probs(self, X):
        return _softmax(X @ self.W + self.b)

    def grads(self, X, y):
        """Per-sample gradients as (dW (N, D, K), db (N, K))."""
        r = self.probs(X)
        r[np.arange(len(y)), y] -= 1.0
        return np.einsum("nd,nk->ndk", X, r), r

    def hvp(self, X, uW, ub):
        """H u of the mean loss over rows of X."""
        p = self.probs(X)
        z = X @ uW + ub  # (N, K): directional change of the logits
        a = p * z - p * (p * z).sum(axis=1, keepdims=True)  # (diag(p) - p p^T) z
        return X.T @ a / len(X), a.mean(axis=0)


def _flat_inputs(eng, idx, seeds):
    x, y = eng.train_inputs(idx, seeds)
    return x.reshape(len(idx), -1).astype(np.float64), y[:, 0]


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("logreg"), "logreg")


def test_hvp_matches_closed_form_logreg_hessian(logreg_run):
    cfg, data = logreg_run
    eng = _final_engine(cfg, data)
    rec = Record.load(paths.record(cfg.output, 0))
    idx, seeds = rec.batch(rec.n_steps - 1)
    x, y = eng.train_inputs(idx, seeds)
    rng = np.random.default_rng(1)
    u = [rng.standard_normal(p.shape).astype(np.float32) for p in eng.net.trainable.values()]
    got = GradientOps(eng).hvp(x, y, u)
    W, b = (eng.net.trainable[k].d for k in ("fc/W", "fc/b"))
    X = x.reshape(len(y), -1).astype(np.float64)
    hW, hb = LogregOracle(W, b).hvp(X, u[0].astype(np.float64), u[1].astype(np.float64))
    assert _rel(got, [hW, hb]) < 1e-4


@pytest.mark.parametrize("scaling", ["correct", "reference"])
def test_whole_walk_matches_closed_form_logreg(logreg_run, scaling):
    """The backward walk (val gradient, per-sample terms, u-updates) against float64 numpy."""
    cfg, data = logreg_run
    eng = _final_engine(cfg, data)
    rec = Record.load(paths.record(cfg.output, 0))
    steps = list(rec.steps_of(int(rec.epoch[-1])))  # the last epoch
    got = walk(GradientOps(eng), rec, steps, hvp_scaling=scaling)[0]

    oracle = LogregOracle(eng.net.trainable["fc/W"].d, eng.net.trainable["fc/b"].d)
    Xv = preprocess.normalize(data.val_x).reshape(len(data.val_y), -1).astype(np.float64)
    gW, gb = oracle.grads(Xv, data.val_y)
    uW, ub = gW.mean(axis=0), gb.mean(axis=0)
    want = np.zeros(rec.n_train)
    for s in steps[::-1]:
        idx, seeds = rec.batch(s)
        X, y = _flat_inputs(eng, idx, seeds)
        lr, B = rec.lr[s], len(idx)
        dW, db = oracle.grads(X, y)
        np.add.at(want, idx, lr / B * (np.einsum("ndk,dk->n", dW, uW) + db @ ub))
        hW, hb = oracle.hvp(X, uW, ub)
        scale = lr / B if scaling == "reference" else lr
        uW, ub = uW - scale * hW, ub - scale * hb
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    assert np.count_nonzero(want) == len(set(rec.indices[steps].ravel()) - {-1})


def test_hvp_matches_finite_differences_on_smooth_net(tmp_path):
    cfg, data = _train(tmp_path, "mlp", n_epochs=1, lr=0.05)
    eng = _final_engine(cfg, data)
    comp = GradientOps(eng)
    rec = Record.load(paths.record(cfg.output, 0))
    idx, seeds = rec.batch(0)
    x, y = eng.train_inputs(idx, seeds)
    rng = np.random.default_rng(2)
    params = list(eng.net.trainable.values())
    u = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    got = comp.hvp(x, y, u)

    xi, ti = input_variables(len(y), data.in_shape)
    loss = F.mean(F.softmax_cross_entropy(eng.net.logits(xi), ti))
    xi.d, ti.d = x, y
    theta = eng.net.get_flat()
    uflat = np.concatenate([a.ravel() for a in u])
    eps = 1e-3 / np.linalg.norm(uflat) * np.sqrt(len(uflat))

    def grad_at(flat):
        eng.net.set_flat(flat.astype(np.float32))
        loss.forward()
        eng.net.zero_grad()
        loss.backward()
        return eng.net.flat_grad().astype(np.float64)

    fd = (grad_at(theta + eps * uflat) - grad_at(theta - eps * uflat)) / (2 * eps)
    eng.net.set_flat(theta)
    gflat = np.concatenate([a.ravel() for a in got])
    assert np.linalg.norm(gflat - fd) / np.linalg.norm(fd) < 1e-3


def _first_batch_and_random_u(cfg, data, seed):
    """The final-weights engine, the inputs of the first recorded batch and a random u."""
    eng = _final_engine(cfg, data)
    rec = Record.load(paths.record(cfg.output, 0))
    x, y = eng.train_inputs(*rec.batch(0))
    u = [np.random.default_rng(seed).standard_normal(p.shape).astype(np.float32)
         for p in eng.net.trainable.values()]
    return eng, x, y, u


def test_fused_per_sample_terms_equal_batch_one_loop(tmp_path):
    cfg, data = _train(tmp_path, "mlp", n_epochs=1, lr=0.05)
    eng, x, y, u = _first_batch_and_random_u(cfg, data, 3)
    comp = GradientOps(eng)
    assert comp.per_sample == "fused"
    loop = comp.per_sample_dots(x, y, u, mode="loop")
    fused, hu = comp.step_terms(x, y, u)
    assert np.max(np.abs(fused - loop)) / np.max(np.abs(loop)) < 1e-4
    assert _rel(hu, comp.hvp(x, y, u)) < 1e-5


def test_bn_weighted_per_sample_terms_equal_batch_one_loop(tmp_path):
    """cifarnet: the GPU path (instance-normalised weighted loss) equals the CPU loop."""
    cfg, data = _train(tmp_path, "cifarnet", n_epochs=1, lr=0.05, n=(40, 20, 20), batch_size=8)
    eng, x, y, u = _first_batch_and_random_u(cfg, data, 4)
    comp = GradientOps(eng, context="cpu")
    assert comp.per_sample == "loop"
    loop = comp.per_sample_dots(x, y, u, mode="loop")
    weighted = comp.per_sample_dots(x, y, u, mode="weighted")
    assert np.max(np.abs(weighted - loop)) / np.max(np.abs(loop)) < 1e-4
    assert GradientOps(eng, context="cudnn").per_sample == "weighted"


def _loo_scores(cfg, data):
    """Real change of the validation loss when each training sample is left out."""
    rec = Record.load(paths.record(cfg.output, 0))
    eng = Engine(model_spec(cfg, data), 0, data, augment=cfg.augment)
    init = load_epoch_state(cfg.output, 0, 0)

    def val_loss(removed):
        eng.net.load_state_dict(init)
        replay(eng, rec, range(rec.n_steps), removed)
        return eng.evaluate_split("val")[0]

    base = val_loss(None)
    out = np.empty(rec.n_train)
    for j in range(rec.n_train):
        mask = np.zeros(rec.n_train, bool)
        mask[j] = True
        out[j] = val_loss(mask) - base
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_leave_one_out_fidelity(tmp_path, model, record_property):
    """Hara's scores against actually retraining without each sample (all epochs)."""
    cfg, data = _train(tmp_path, model, n_epochs=3, infl_epochs=0, lr=0.003)
    loo = _loo_scores(cfg, data)
    hara = compute_scores(cfg, 0, "Hara", data)
    ours = compute_scores(cfg, 0, "Ours", data)
    tau, r = kendalltau(hara, loo)[0], pearsonr(hara, loo)[0]
    tau_o, r_o = kendalltau(ours, loo)[0], pearsonr(ours, loo)[0]
    record_property("hara_tau_pearson", (tau, r))
    record_property("ours_tau_pearson", (tau_o, r_o))
    print(f"{model}: Hara tau {tau:.3f} pearson {r:.3f}; Ours tau {tau_o:.3f} pearson {r_o:.3f}")
    assert tau >= 0.9 and r >= 0.95
    # Ours linearises at the final weights: a looser fit, still strongly aligned.
    assert r_o >= 0.9


def test_ours_equals_hara_when_cache_holds_final_weights(tmp_path):
    cfg, data = _train(tmp_path, "logreg", n_epochs=2, infl_epochs=1, lr=0.05)
    cfg = C.replace(cfg, hara_cache=True)
    run_training(cfg, 0, data)  # writes the every-step cache of the window by replay
    hara = compute_scores(cfg, 0, "Hara", data)
    ours = compute_scores(cfg, 0, "Ours", data)
    assert not np.allclose(hara, ours)  # the Hara path really reads the every-step cache
    cache_path = paths.step_cache(cfg.output, 0, 1)
    cache = np.load(cache_path)
    final = _final_engine(cfg, data).net.get_flat()
    np.save(cache_path, np.broadcast_to(final, cache.shape).copy())
    hara_at_final = compute_scores(cfg, 0, "Hara", data)
    np.testing.assert_array_equal(hara_at_final, ours)


def test_single_step_window_hara_is_first_order_in_lr(tmp_path):
    """One step in the window: Hara's per-sample terms are taken at theta_{T-1} (checked in
    closed form), Ours' at theta_T = theta_{T-1} - lr g. Their gap vanishes with lr at
    least in proportion to it (from the zero start of logreg it is about quadratic)."""
    gaps = []
    for lr in (2e-3, 8e-3):
        cfg, data = _train(tmp_path / f"lr{lr}", "logreg", n_epochs=2, infl_epochs=1, lr=lr,
                           n=(20, 40, 20), batch_size=20)
        rec = Record.load(paths.record(cfg.output, 0))
        assert len(rec.window(1)) == 1
        hara = compute_scores(cfg, 0, "Hara", data)
        ours = compute_scores(cfg, 0, "Ours", data)

        eng = _final_engine(cfg, data)
        final = LogregOracle(eng.net.trainable["fc/W"].d, eng.net.trainable["fc/b"].d)
        Xv = preprocess.normalize(data.val_x).reshape(len(data.val_y), -1).astype(np.float64)
        gW, gb = final.grads(Xv, data.val_y)
        uW, ub = gW.mean(axis=0), gb.mean(axis=0)
        start = load_epoch_state(cfg.output, 0, 1)  # theta_{T-1}: the window starts there
        idx, seeds = rec.batch(rec.n_steps - 1)
        X, y = _flat_inputs(eng, idx, seeds)
        dW, db = LogregOracle(start["fc/W"], start["fc/b"]).grads(X, y)
        want = np.zeros(rec.n_train)
        want[idx] = lr / len(idx) * (np.einsum("ndk,dk->n", dW, uW) + db @ ub)
        assert np.linalg.norm(hara - want) / np.linalg.norm(want) < 1e-5
        gaps.append(np.linalg.norm(hara - ours) / np.linalg.norm(ours))
    assert gaps[0] > 1e-3  # far above float32 rounding: Hara really uses theta_{T-1}
    assert gaps[1] / gaps[0] > 3.0  # 4 x the learning rate: the gap grows at least ~4 x


def test_influence_phase_leaves_saved_model_untouched(tmp_path):
    cfg, data = _train(tmp_path, "cifarnet", n_epochs=1, lr=0.05, n=(24, 16, 16), batch_size=8,
                       width=2, infl_epochs=1)
    out = Path(cfg.output)

    def files():
        return {p.relative_to(out).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                p.stat().st_mtime_ns)
                for p in out.rglob("*") if p.is_file()}

    before = files()
    state = load_snapshot(paths.epoch_snapshot(cfg.output, 0, 1))
    comp_eng = _final_engine(cfg, data)
    for method in ("Hara", "Ours", "Random"):
        run_influence(cfg, 0, method, data)
    # the phase writes under influence/ only: no file of the training run is rewritten
    after = files()
    assert {k: after.get(k) for k in before} == before
    new = set(after) - set(before)
    assert all(k.startswith("influence/") for k in new), sorted(new)
    assert {f"influence/{m}/influence_0.csv" for m in ("Hara", "Ours", "Random")} <= new
    # running statistics in memory are not changed by the HVP or per-sample graphs either
    comp = GradientOps(comp_eng)
    rec = Record.load(paths.record(cfg.output, 0))
    walk(comp, rec, rec.window(1))
    after = comp_eng.net.state_dict()
    for k in state:
        np.testing.assert_array_equal(after[k], state[k])


def test_influence_file_format_and_order(tmp_path):
    cfg, data = _train(tmp_path, "logreg", n_epochs=1, lr=0.05, n=(50, 20, 20), batch_size=10)
    import pandas as pd

    for method in ("Ours", "Random"):
        df = pd.read_csv(run_influence(cfg, 0, method, data))
        assert list(df.columns) == ["x:image", "y:label", "influence", "datasource_index"]
        assert len(df) == 50
        assert df["influence"].is_monotonic_increasing
        assert sorted(df["datasource_index"]) == list(range(50))
        row = df.iloc[0]
        assert row["x:image"] == data.train_paths[int(row["datasource_index"])]
    r1 = pd.read_csv(paths.influence(cfg.output, "Random", 0))["datasource_index"].tolist()
    r2 = compute_scores(cfg, 0, "Random", data).argsort(kind="mergesort").tolist()
    assert r1 == r2
    # the growth of |u| over Ours' walk is stored beside its scores (Random has no walk)
    facts = fileio.read_json(paths.influence_stats(cfg.output, "Ours", 0))
    rec = Record.load(paths.record(cfg.output, 0))
    comp = GradientOps(_final_engine(cfg, data))
    steps = rec.window(cfg.window_epochs())
    _, walked = walk(comp, rec, steps)
    assert facts["u_growth"] == walked["u_growth"] and facts["window_steps"] == len(steps)
    assert facts["u_growth"] != 1.0
    assert "u_growth" not in fileio.read_json(paths.influence_stats(cfg.output, "Random", 0))  # no walk


def test_model_spec_rejects_unknown_model():
    with pytest.raises(ValueError, match="--model"):
        ModelSpec("resnet", (1, 32, 32), 10)


def test_non_finite_scores_are_refused_and_not_written(tmp_path, monkeypatch):
    cfg, data = _train(tmp_path, "logreg", n_epochs=1, lr=0.05, n=(30, 10, 10), batch_size=10)
    import sgd_influence.infl as infl

    monkeypatch.setattr(infl, "compute_scores", lambda *a, **k: np.full(30, np.nan))
    with pytest.raises(FloatingPointError, match="not finite"):
        run_influence(cfg, 0, "Ours", data)
    assert not paths.influence(cfg.output, "Ours", 0).exists()


def test_another_walk_setting_is_another_entry_of_that_method_only(tmp_path):
    cfg, data = _train(tmp_path, "logreg", n_epochs=1, lr=0.05, n=(30, 10, 10), batch_size=10)
    cfg = C.replace(cfg, methods=("Ours", "Random"))
    view.point(cfg, ("infl",), [0])
    for m in cfg.methods:
        run_influence(cfg, 0, m, data)
    random_bytes = paths.influence(tmp_path, "Random", 0).read_bytes()
    ours_bytes = paths.influence(tmp_path, "Ours", 0).read_bytes()
    other = C.replace(cfg, hvp_scaling="reference")
    view.point(other, ("infl",), [0])
    assert not paths.influence(tmp_path, "Ours", 0).exists()  # another entry, to be computed
    assert paths.influence(tmp_path, "Random", 0).read_bytes() == random_bytes  # no walk settings
    run_influence(other, 0, "Ours", data)
    assert paths.influence(tmp_path, "Ours", 0).read_bytes() != ours_bytes
    view.point(cfg, ("infl",), [0])
    assert paths.influence(tmp_path, "Ours", 0).read_bytes() == ours_bytes  # kept, and back
    view.point(C.replace(cfg, overwrite=True), ("infl",), [0])
    assert not paths.influence(tmp_path, "Ours", 0).exists()  # --overwrite: computed again
    assert not paths.influence(tmp_path, "Random", 0).exists()


def test_a_lost_or_damaged_saved_identity_is_written_again(tmp_path):
    """An entry's key is its identity: a lost or damaged config.json beside its results is
    written again, and its results (checked by their own checksums) are reused."""
    cfg, data = _train(tmp_path, "logreg", n_epochs=1, lr=0.05, n=(30, 10, 10), batch_size=10)
    cfg = C.replace(cfg, methods=("Ours",))
    view.point(cfg, ("infl",), [0])
    run_influence(cfg, 0, "Ours", data)
    kept = paths.influence(tmp_path, "Ours", 0).read_bytes()
    paths.method_identity(tmp_path, "Ours").unlink()
    view.point(cfg, ("infl",), [0])
    assert fileio.read_json(paths.method_identity(tmp_path, "Ours")) == view.influence_identity(cfg, "Ours")
    paths.method_identity(tmp_path, "Ours").write_text('{"broken')
    view.point(cfg, ("infl",), [0])
    assert fileio.read_json(paths.method_identity(tmp_path, "Ours")) == view.influence_identity(cfg, "Ours")
    assert paths.influence(tmp_path, "Ours", 0).read_bytes() == kept


@pytest.mark.parametrize("model, bn_influence", [("mlp", "exact"), ("logreg", "reference")])
def test_walk_per_example_starts_average_to_the_mean_target(tmp_path, model, bn_influence):
    """The walk is linear in its starting vector: the walks started from each validation
    example's loss gradient, averaged, give the walk of the mean validation loss; and
    started from the mean validation gradient it is the default walk bit for bit."""
    cfg, data = _train(tmp_path, model, n_epochs=2, n=(60, 12, 10), batch_size=10)
    rec = Record.load(paths.record(cfg.output, 0))
    ops = GradientOps(_final_engine(cfg, data), context="cpu")
    steps = rec.window(rec.n_epochs)
    want, _ = walk(ops, rec, steps, bn_influence=bn_influence)
    again, _ = walk(ops, rec, steps, bn_influence=bn_influence, start=ops.val_gradient())
    np.testing.assert_array_equal(again, want)
    x, y = ops.engine.inputs(data.val_x), data.val_y
    per = [walk(ops, rec, steps, bn_influence=bn_influence, start=[a.copy() for a in g])[0]
           for g in ops.each_sample_gradient(x, y)]
    mean = np.mean(per, axis=0)
    err = np.max(np.abs(mean - want)) / np.max(np.abs(want))
    print(f"{model}: per-example walks averaged against the mean-loss walk: relative error {err:.2e}")
    assert err < 1e-5
    assert np.std(per, axis=0).mean() > 0.1 * np.abs(want).mean()  # the examples really differ
