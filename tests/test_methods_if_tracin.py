"""Oracle tests of the IF and TracIn methods: IF against the closed-form damped solve
of softmax regression and against leave-one-out retraining of an L2-regularised softmax
regression solved to float64 precision; TracIn against a hand computation from the
network's own per-sample gradients at the epoch snapshots (and its self-influence);
confident learning (CL) against scikit-learn and cleanlab called directly; and one
pipeline run with ``--methods IF TracIn Random``."""

from __future__ import annotations

import nnabla.functions as F
import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from synth import make_dataset, write_csv_dataset

import train_infl_eval
from sgd_influence import config as C
from sgd_influence import fileio, paths, preprocess
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores
from sgd_influence.methods import GradientOps
from sgd_influence.methods.influence_function import influence_scores
from sgd_influence.models import input_variables
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_epoch_state, load_final_state


def _train(tmp_path, model, n=(48, 30, 10), classes=3, side=None, **kw):
    """``side``: images of side x side pixels seen at that size (default: 32 x 32)."""
    # the oracle tests check the double backward (--hvp diff is checked against it in test_hvp_diff)
    kw = {"hvp": "exact", "width": 4, "batch_size": 16, "n_epochs": 2, "lr": 0.01, **kw}
    cfg = C.Config(output=str(tmp_path), model=model, infl_epochs=0, lr_schedule="constant", **kw)
    data = prepare(make_dataset(*n, seed=0, num_classes=classes, side=side or 32), 0,
                   size=(side, side) if side else None)
    run_training(cfg, 0, data)
    return cfg, data


# ----------------------------------------------------------------- softmax regression in numpy
def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logit_losses(z, y):
    z = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def _losses(X, y, Wa):
    return _logit_losses(X @ Wa, y)


def _with_bias(X):
    """Rows [x, 1]: the augmented weights Wa = [W; b] flatten as nnabla's [fc/W, fc/b]."""
    return np.hstack([X, np.ones((len(X), 1))])


def _train_rows(eng, data):
    """Un-augmented training inputs as float64 rows with the bias column."""
    x, _ = eng.train_inputs(np.arange(data.n_train), None)
    return _with_bias(x.reshape(data.n_train, -1).astype(np.float64))


def _val_rows(data):
    xv = preprocess.normalize(data.val_x)
    return _with_bias(xv.reshape(len(data.val_y), -1).astype(np.float64))


def _dense_hessian(Xa, Wa):
    """The Hessian of the mean loss: (1/N) sum_i (x_i x_i^T) kron (diag p_i - p_i p_i^T)."""
    n, k = len(Xa), Wa.shape[1]
    p = _softmax(Xa @ Wa)
    a = np.einsum("nk,kl->nkl", p, np.eye(k)) - np.einsum("nk,nl->nkl", p, p)
    return np.einsum("nd,ne,nkl->dkel", Xa, Xa, a, optimize=True).reshape(Wa.size, Wa.size) / n


def _sample_grads(Xa, y, Wa):
    r = _softmax(Xa @ Wa)
    r[np.arange(len(y)), y] -= 1.0
    return np.einsum("nd,nk->ndk", Xa, r).reshape(len(y), -1)


def _weights(eng):
    return np.vstack([eng.net.trainable["fc/W"].d, eng.net.trainable["fc/b"].d]).astype(np.float64)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------- IF: closed form
def test_if_matches_closed_form_damped_solve(tmp_path, record_property):
    """IF through the method seam on a trained softmax regression (augmented training,
    un-augmented IF) against (1/N) G (H + lambda I)^-1 g_val solved densely in float64."""
    cfg, data = _train(tmp_path, "logreg")
    eng = Engine(model_spec(cfg, data), 0, data, augment=cfg.augment)
    eng.net.load_state_dict(load_final_state(cfg.output, 0))
    Wa = _weights(eng)
    Xa, Xv = _train_rows(eng, data), _val_rows(data)
    H = _dense_hessian(Xa, Wa)
    g_val = _sample_grads(Xv, data.val_y, Wa).mean(axis=0)
    G = _sample_grads(Xa, data.train_y, Wa)
    for damping in (0.01, 0.1):
        facts: dict = {}
        got = compute_scores(C.replace(cfg, if_damping=damping), 0, "IF", data, facts=facts)
        want = G @ np.linalg.solve(H + damping * np.eye(len(H)), g_val) / data.n_train
        err = _rel(got, want)
        record_property(f"if_rel_error_damping_{damping}", err)
        record_property(f"if_facts_damping_{damping}", facts)
        print(f"damping {damping}: relative error {err:.3g}, {facts}")
        assert err <= 1e-3
        assert facts["hvps"] == facts["cg_iters"] + 1
        assert 0 < facts["cg_iters"] < cfg.if_cg_iters and facts["cg_residual"] < 1e-4
    # the solve is needed: without the Hessian the scores are far off
    assert _rel(G @ g_val / data.n_train / 0.1, want) > 0.5


# ----------------------------------------------------------------- IFSelf
def test_ifself_matches_closed_form_self_influence(tmp_path, record_property):
    """IFSelf on a trained softmax regression against (1/N) g_j^T (H + lambda I)^-1 g_j
    with the closed-form Hessian, solved densely in float64. H has rank at most
    N (K - 1) = 96, so 110 Lanczos steps span its range (and every g_j lies in it): the
    low-rank formula is then exact. With 10 steps it is not, and says so by its error.
    (8 x 8 images: 195 parameters.)"""
    cfg, data = _train(tmp_path, "logreg", side=8)
    eng = Engine(model_spec(cfg, data), 0, data, augment=cfg.augment)
    eng.net.load_state_dict(load_final_state(cfg.output, 0))
    Wa = _weights(eng)
    Xa = _train_rows(eng, data)
    H = _dense_hessian(Xa, Wa)
    G = _sample_grads(Xa, data.train_y, Wa)
    errors = {}
    for damping, rank in ((0.01, 110), (0.1, 110), (0.1, 10)):
        facts: dict = {}
        got = compute_scores(C.replace(cfg, if_damping=damping, ifself_rank=rank), 0, "IFSelf", data,
                             facts=facts)
        want = -np.einsum("nd,nd->n", G, np.linalg.solve(H + damping * np.eye(len(H)), G.T).T) / data.n_train
        errors[(damping, rank)] = _rel(got, want)
        assert facts["hvps"] == rank and facts["left_out"] == 0
        assert facts["top_curvature"] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-4)
    record_property("ifself_rel_errors", {str(k): v for k, v in errors.items()})
    print(f"IFSelf relative errors: {errors}")
    assert errors[(0.01, 110)] <= 1e-3 and errors[(0.1, 110)] <= 1e-3
    assert errors[(0.1, 10)] > 10 * errors[(0.1, 110)]  # the rank matters
    # the same seed, the same scores; another seed starts Lanczos elsewhere
    again = compute_scores(C.replace(cfg, if_damping=0.1, ifself_rank=10), 0, "IFSelf", data)
    np.testing.assert_array_equal(again, compute_scores(C.replace(cfg, if_damping=0.1, ifself_rank=10), 0,
                                                        "IFSelf", data))


def test_ifself_on_a_bn_network_matches_the_dense_hessian(tmp_path, record_property):
    """The smooth BN cifarnet (width 1 on 8 x 8 images: 331 parameters): with as many
    Lanczos steps as parameters IFSelf equals the self-influence computed from the dense
    Hessian (H e_i for every unit vector: the mini-batch HVP with BN batch statistics) by
    eigendecomposition, with the method's rule for curvature below -lambda (left out,
    damped by lambda alone)."""
    from sgd_influence.methods.influence_function import DampedHessian, flat

    cfg, data = _train(tmp_path, "cifarnet", n=(24, 20, 10), side=8, width=1, smooth=True, batch_size=24,
                       n_epochs=4, lr=0.1)
    eng = Engine(model_spec(cfg, data), 0, data, augment=cfg.augment)
    eng.net.load_state_dict(load_final_state(cfg.output, 0))
    ops = GradientOps(eng, "loop", "cpu", "exact")
    apply = DampedHessian(ops, 0.0, cfg.batch_size)
    dim = sum(int(p.size) for p in ops.params)
    H = np.stack([apply(e) for e in np.eye(dim)])
    H = (H + H.T) / 2
    x, y = eng.train_inputs(np.arange(data.n_train), None)
    G = np.stack([flat(g) for g in ops.each_sample_gradient(x, y)])
    lam, V = np.linalg.eigh(H)
    assert lam[0] < -1e-3  # the trained BN network's Hessian is indefinite
    damping = 0.5 * -lam[0]
    keep = lam + damping > 0
    proj = G @ V[:, keep]
    want = -(np.sum(proj**2 / (lam[keep] + damping), axis=1)
             + (np.sum(G**2, axis=1) - np.sum(proj**2, axis=1)) / damping) / data.n_train
    facts: dict = {}
    got = compute_scores(C.replace(cfg, if_damping=float(damping), ifself_rank=dim), 0, "IFSelf",
                         data, facts=facts)
    err = _rel(got, want)
    record_property("ifself_bn_rel_error", err)
    print(f"damping {damping:.3g}: relative error {err:.3g}, left out {facts['left_out']} "
          f"(dense: {np.count_nonzero(~keep)}), curvature {lam[0]:.3g} to {lam[-1]:.3g}")
    assert 1 <= np.count_nonzero(~keep) == facts["left_out"]
    assert facts["top_curvature"] == pytest.approx(lam[-1], rel=1e-4)
    assert err <= 1e-3


# ----------------------------------------------------------------- IF: leave-one-out
class RegularisedLogreg:
    """argmin_theta (1/N) sum_i w_i l_i(theta) + (lambda/2) |theta|^2 in float64.

    The minimiser lies in the span of the training rows, Wa = Xa^T C, and C solves
    C = -diag(w) R(Xa Xa^T C) / (N lambda) (R: softmax minus one-hot); Newton on that
    N K system, with backtracking on the objective, is run to a stationarity residual of
    1e-13 (about 1e-11 in the weights)."""

    def __init__(self, Xa, y, k, damping):
        self.Xa, self.y, self.k, self.lam = Xa, y, k, damping
        self.n = len(y)
        self.gram = Xa @ Xa.T
        self.onehot = np.eye(k)[y]

    def _objective(self, C, w):
        Z = self.gram @ C
        return (w @ _logit_losses(Z, self.y)) / self.n + self.lam / 2 * np.sum(C * Z)

    def solve(self, w, C=None):
        n, k, lam = self.n, self.k, self.lam
        C = np.zeros((n, k)) if C is None else C.copy()
        for _ in range(100):
            p = _softmax(self.gram @ C)
            q = w[:, None] * (p - self.onehot) / n + lam * C
            if np.abs(q).max() < 1e-13:
                break
            s = np.einsum("nk,kl->nkl", p, np.eye(k)) - np.einsum("nk,nl->nkl", p, p)
            m = np.einsum("p,pkl,pm->pkml", w / n, s, self.gram).reshape(n * k, n * k)
            step_dir = np.linalg.solve(m + lam * np.eye(n * k), q.ravel()).reshape(n, k)
            f0, step = self._objective(C, w), 1.0
            while self._objective(C - step * step_dir, w) > f0 + 1e-14 * abs(f0) and step > 1e-8:
                step /= 2
            C = C - step * step_dir
        else:
            raise AssertionError("Newton did not converge")
        return C

    def weights(self, C):
        return self.Xa.T @ C


def test_if_sign_and_scale_against_leave_one_out(record_property):
    """At the minimiser of the L2-regularised softmax regression (lambda = --if-damping)
    H + lambda I is its exact Hessian, so IF is its exact first-order influence: it must
    equal the infinitesimal removal (a central difference in j's weight, float64) and
    agree in sign with real leave-one-out retraining; flipped labels come out harmful."""
    damping, k = 0.01, 3
    cfg = C.Config(output="unused", model="logreg", batch_size=16, if_damping=damping)
    data = prepare(make_dataset(36, 30, 10, seed=0, num_classes=k), 0, label_noise=0.2)
    eng = Engine(model_spec(cfg, data), 0, data, augment=False)
    Xa, Xv = _train_rows(eng, data), _val_rows(data)
    n = data.n_train
    problem = RegularisedLogreg(Xa, data.train_y, k, damping)
    C_full = problem.solve(np.ones(n))

    def val_loss(C):
        return float(_losses(Xv, data.val_y, problem.weights(C)).mean())

    base = val_loss(C_full)
    loo, first_order = np.empty(n), np.empty(n)
    eps = 1e-4
    for j in range(n):
        w = np.ones(n)
        w[j] = 0.0
        loo[j] = val_loss(problem.solve(w, C_full)) - base
        w[j] = 1.0 - eps
        down = val_loss(problem.solve(w, C_full))
        w[j] = 1.0 + eps
        up = val_loss(problem.solve(w, C_full))
        first_order[j] = (down - up) / (2 * eps)  # d L_val / d(-w_j): one whole removal

    Wa = problem.weights(C_full).astype(np.float32)
    eng.net.trainable["fc/W"].d, eng.net.trainable["fc/b"].d = Wa[:-1], Wa[-1]
    got, facts = influence_scores(GradientOps(eng), damping, 200, cfg.batch_size)
    err, r = _rel(got, first_order), pearsonr(got, loo)[0]
    record_property("if_vs_first_order_rel_error", err)
    record_property("if_vs_loo_pearson", r)
    record_property("if_loo_facts", facts)
    print(f"IF vs infinitesimal removal: relative error {err:.3g}; vs leave-one-out: Pearson "
          f"{r:.4f}, ratio IF/LOO median {np.median(got / loo):.3f}; {facts}")
    assert err <= 1e-3
    assert np.all(np.sign(got) == np.sign(loo))
    assert r >= 0.95
    assert data.flipped.any() and np.all(loo[data.flipped] < 0) and np.all(got[data.flipped] < 0)


# ----------------------------------------------------------------- TracIn
@pytest.mark.parametrize("checkpoints, epochs", [("all", (0, 1, 2)), ("window", (1, 2))])
def test_tracin_matches_hand_computation(tmp_path, record_property, checkpoints, epochs):
    """The mlp with a decaying rate and augmentation, 3 epochs, a window of 2: TracIn is the
    sum over the epoch-start snapshots (every epoch's, or the window's) of
    (eta_e / B) <g_val, g_j> with the network's own gradients (one backward per sample, on
    the input training saw in that epoch); TracInSelf the same sum of (eta_e / B) |g_j|^2,
    negated."""
    cfg = C.Config(output=str(tmp_path), model="mlp", n_epochs=3, infl_epochs=2, batch_size=8,
                   lr=0.05, lr_schedule="cosine", lr_decay_epochs=2, tracin_checkpoints=checkpoints)
    data = prepare(make_dataset(20, 12, 4, seed=1, num_classes=3), 1)
    run_training(cfg, 0, data)
    facts: dict = {}
    got = compute_scores(cfg, 0, "TracIn", data, facts=facts)
    assert facts == {"checkpoints": len(epochs)}
    self_facts: dict = {}
    got_self = compute_scores(cfg, 0, "TracInSelf", data, facts=self_facts)
    assert self_facts == {"checkpoints": len(epochs)}

    rec = Record.load(paths.record(cfg.output, 0))
    eng = Engine(model_spec(cfg, data), 0, data)
    params = list(eng.net.trainable.values())
    xv, tv = input_variables(len(data.val_y), data.in_shape)
    val_loss = F.mean(F.softmax_cross_entropy(eng.net.logits(xv, bn="eval"), tv))
    x1, t1 = input_variables(1, data.in_shape)
    one_loss = F.mean(F.softmax_cross_entropy(eng.net.logits(x1, bn="train"), t1))

    def grad(loss):
        loss.forward()
        for p in params:
            p.grad.zero()
        loss.backward()
        return np.concatenate([p.g.ravel() for p in params]).astype(np.float64)

    want, want_self = np.zeros(data.n_train), np.zeros(data.n_train)
    rates = []
    for e in epochs:
        eng.net.load_state_dict(load_epoch_state(cfg.output, 0, e))
        xv.d, tv.d = preprocess.normalize(data.val_x), data.val_y[:, None]
        g_val = grad(val_loss)
        eta = float(np.mean(rec.lr[rec.epoch == e]))
        rates.append(eta)
        for s in np.flatnonzero(rec.epoch == e):
            idx, seeds = rec.batch(s)
            for j, sd in zip(idx, seeds):
                x1.d = preprocess.batch_inputs(data.train_x[j : j + 1], np.array([sd]))
                t1.d = data.train_y[j : j + 1, None]
                g_j = grad(one_loss)
                want[j] += eta / cfg.batch_size * (g_val @ g_j)
                want_self[j] -= eta / cfg.batch_size * (g_j @ g_j)
    assert rates[-2] > rates[-1] * 1.5  # the epochs really have different weights
    assert np.count_nonzero(want) == data.n_train
    err, err_self = _rel(got, want), _rel(got_self, want_self)
    record_property("tracin_rel_error", err)
    print(f"TracIn ({checkpoints}): relative error {err:.3g}, self-influence {err_self:.3g} (rates {rates})")
    assert err < 1e-4 and err_self < 1e-5
    assert np.all(got_self < 0)


def test_tracin_checkpoints_key_only_the_window_variant():
    """TracIn over the whole training does not depend on the window; its window variant does."""
    from sgd_influence import methods

    tracin = methods.get("TracIn")
    whole = [tracin.settings(C.Config(infl_epochs=k)) for k in (1, 2)]
    assert whole[0] == whole[1] == {"tracin_checkpoints": "all"}
    window = [tracin.settings(C.Config(infl_epochs=k, tracin_checkpoints="window")) for k in (1, 2)]
    assert window[0] != window[1] and window[0]["infl_epochs"] == 1
    with pytest.raises(ValueError, match="--tracin-checkpoints: expected all or window"):
        C.Config(tracin_checkpoints="last").validate()


# ----------------------------------------------------------------- confident learning
def test_cl_is_cleanlab_on_out_of_fold_logistic_regression(tmp_path):
    """CL's scores are cleanlab's self-confidence minus 1 over scikit-learn's out-of-fold
    probabilities of the same folds (computed here independently with cross_val_predict),
    and on data with 20 % of the labels flipped it ranks the flipped ones first."""
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cfg = C.Config(output=str(tmp_path), model="logreg", cl_folds=3)
    data = prepare(make_dataset(90, 10, 10, seed=2, num_classes=3, side=12), 0, label_noise=0.2)
    facts: dict = {}
    got = compute_scores(cfg, 5, "CL", data, facts=facts)
    x = data.train_x.reshape(data.n_train, -1) / 255.0
    y = data.train_y.ravel()
    probs = cross_val_predict(LogisticRegression(max_iter=500), x, y, method="predict_proba",
                              cv=StratifiedKFold(3, shuffle=True, random_state=5))
    want = get_label_quality_scores(y, probs) - 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert facts["folds"] == 3 and facts["converged"] and facts["flagged"] >= 1
    assert data.flipped.sum() >= 10
    auc = roc_auc_score(data.flipped, -got)
    print(f"CL: AUC of the flipped labels {auc:.3f}; {facts}")
    assert auc > 0.9
    # another seed: other folds, other scores
    assert not np.array_equal(compute_scores(cfg, 6, "CL", data), got)


def test_cl_refuses_more_folds_than_samples(tmp_path):
    cfg = C.Config(output=str(tmp_path), model="logreg", cl_folds=50)
    data = prepare(make_dataset(20, 10, 10, seed=2, num_classes=2, side=8), 0)
    with pytest.raises(ValueError, match=r"--cl-folds: expected at most the number of training samples \(20\), got 50"):
        compute_scores(cfg, 0, "CL", data)
    with pytest.raises(ValueError, match="--cl-folds: expected an integer >= 2"):
        C.Config(cl_folds=1).validate()


# ----------------------------------------------------------------- pipeline
def test_pipeline_runs_if_and_tracin(tmp_path):
    csv = write_csv_dataset(tmp_path / "data", sizes=(40, 20, 20), seed=3)
    out = tmp_path / "out"
    argv = ["-o", str(out), "--train-csv", str(csv["train"]), "--val-csv", str(csv["val"]),
            "--test-csv", str(csv["test"]), "--model", "logreg", "-e", "2", "--batch-size", "8",
            "--lr", "0.01", "-nt", "1", "-r", "0", "4", "12", "--noise-floor-draws", "0",
            "--methods", "IF", "TracIn", "Random", "--if-damping", "0.05", "--jobs", "1"]
    assert train_infl_eval.main(argv) == 0
    for m in ("IF", "TracIn", "Random"):
        inf = pd.read_csv(paths.influence(out, m, 0))
        assert list(inf.columns) == ["x:image", "y:label", "influence", "datasource_index"]
        assert len(inf) == 40 and sorted(inf["datasource_index"]) == list(range(40))
        assert np.isfinite(inf["influence"]).all() and inf["influence"].is_monotonic_increasing
    facts = fileio.read_json(paths.influence_stats(out, "IF", 0))
    assert facts["method"] == "IF" and facts["hvps"] == facts["cg_iters"] + 1 > 1
    assert fileio.read_json(paths.influence_stats(out, "TracIn", 0))["checkpoints"] == 2  # both epochs
    assert fileio.read_json(paths.method_identity(out, "IF"))["if_damping"] == 0.05
    ranks = {m: pd.read_csv(paths.influence(out, m, 0))["datasource_index"].tolist()
             for m in ("IF", "TracIn", "Random")}
    assert ranks["IF"] != ranks["Random"] and ranks["TracIn"] != ranks["Random"]
    summary = pd.read_csv(paths.summary(out))
    for m in ("IF", "TracIn"):
        rows = summary[summary["method"] == m]
        assert sorted(rows.loc[rows["row"] == "trial", "n_drops"]) == [4, 12]
        assert (rows["row"] == "mean").sum() == 2 and (rows["row"] == "std").sum() == 2
        assert rows["test_accuracy"].dropna().between(0, 1).all()
        assert rows["u_growth"].isna().all()  # no walk: no growth of |u|
        for n in (4, 12):
            assert paths.score(out, m, n, 0).exists()
    assert set(summary["method"]) == {"No Removal", "IF", "TracIn", "Random"}

    # each phase alone takes IF's settings, and by default those of the folder's run
    from sgd_influence import cli

    first = paths.influence(out, "IF", 0).read_bytes()
    paths.influence(out, "IF", 0).unlink()
    assert cli.infl_main(["-o", str(out), "--methods", "IF", "--seed", "0"]) == 0
    assert paths.influence(out, "IF", 0).read_bytes() == first  # damping 0.05 from the folder
    assert cli.infl_main(["-o", str(out), "--methods", "IF", "--if-damping", "0.05",
                          "--if-cg-iters", "100"]) == 0
    assert cli.eval_main(["-o", str(out), "--methods", "IF", "--if-damping", "0.05",
                          "--jobs", "1"]) == 0
    assert cli.eval_main(["-o", str(out), "--methods", "IF", "--if-damping", "0.5", "--jobs", "1"]) == 2


# ----------------------------------------------------------------- settings
def test_if_settings_flags_and_identity(tmp_path):
    cfg = C.Config(if_damping=0.5, if_cg_iters=7)
    from sgd_influence import view

    ident = view.influence_identity(cfg, "IF")
    assert (ident["if_damping"], ident["if_cg_iters"]) == (0.5, 7)
    from sgd_influence import methods as M

    assert M.names() == ("Hara", "Ours", "IF", "TracIn", "TracInSelf", "IFSelf", "CL", "Random")
    assert M.get("IF").settings(cfg) == {"if_damping": 0.5, "if_cg_iters": 7, "hvp": "diff"}  # auto
    assert M.get("TracIn").settings(cfg) == {"tracin_checkpoints": "all"}
    for bad, flag in (({"if_damping": 0.0}, "--if-damping"), ({"if_cg_iters": 0}, "--if-cg-iters")):
        with pytest.raises(ValueError, match=flag):
            C.Config(**bad).validate()
    # IF's settings are IF's identity only: changing them never touches another method's
    from sgd_influence import store, view

    other = C.Config(if_damping=0.1)
    for m in ("Hara", "Ours", "TracIn", "TracInSelf", "CL", "Random"):
        assert view.influence_identity(other, m) == view.influence_identity(C.Config(), m)
        assert not any(k.startswith("if_") for k in view.influence_identity(other, m))
    assert view.influence_identity(other, "IF")["if_damping"] == 0.1
    assert store.key(view.influence_identity(other, "IF")) != store.key(view.influence_identity(C.Config(), "IF"))
    assert view.describe_diff(view.influence_identity(C.Config(), "IF"),
                              view.influence_identity(other, "IF")) == "--if-damping: 10.0 -> 0.1"


def test_pipeline_detects_with_self_influence_and_cl(tmp_path):
    """TracInSelf, IFSelf and CL run through the pipeline with label noise and appear in the
    detection table (IFSelf's rank a flag); CL's and TracIn's settings are flags of the influence phase alone."""
    from sgd_influence import cli

    csv = write_csv_dataset(tmp_path / "data", sizes=(60, 20, 20), seed=4)
    out = tmp_path / "out"
    argv = ["-o", str(out), "--train-csv", str(csv["train"]), "--val-csv", str(csv["val"]),
            "--test-csv", str(csv["test"]), "--model", "logreg", "-e", "2", "--batch-size", "10",
            "--lr", "0.01", "-nt", "1", "-r", "0", "6", "--noise-floor-draws", "0", "--label-noise", "0.2",
            "--methods", "TracInSelf", "IFSelf", "CL", "Random", "--cl-folds", "3", "--ifself-rank", "4",
            "--jobs", "2"]  # Dask workers: daemonic
    assert train_infl_eval.main(argv) == 0
    table = pd.read_csv(paths.detection(out))
    assert {"TracInSelf", "IFSelf", "CL", "Random"} <= set(table["method"])
    ifself = fileio.read_json(paths.influence_stats(out, "IFSelf", 0))
    assert ifself["hvps"] == 4 and ifself["top_curvature"] > 0
    assert (pd.read_csv(paths.influence(out, "IFSelf", 0))["influence"] < 0).all()
    facts = fileio.read_json(paths.influence_stats(out, "CL", 0))
    assert facts["folds"] == 3 and facts["method"] == "CL"
    assert fileio.read_json(paths.influence_stats(out, "TracInSelf", 0))["checkpoints"] == 2
    inf = pd.read_csv(paths.influence(out, "TracInSelf", 0))
    assert (inf["influence"] < 0).all() and inf["influence"].is_monotonic_increasing

    first = paths.influence(out, "CL", 0).read_bytes()
    assert cli.infl_main(["-o", str(out), "--methods", "CL", "--cl-folds", "2"]) == 0
    assert paths.influence(out, "CL", 0).read_bytes() != first  # two folds: other probabilities
    assert cli.infl_main(["-o", str(out), "--methods", "CL", "--cl-folds", "3"]) == 0
    assert paths.influence(out, "CL", 0).read_bytes() == first  # kept in the store, linked back
    assert cli.infl_main(["-o", str(out), "--methods", "TracInSelf", "--tracin-checkpoints", "window"]) == 0
    assert fileio.read_json(paths.influence_stats(out, "TracInSelf", 0))["checkpoints"] == 1
