"""Leave-one-out fidelity on cifarnet: do the scores predict what retraining does?

Trains cifarnet on a seeded random subset of mnist5k, computes Hara and Ours influence
over the last epoch with both ``--bn-influence`` modes, and replays the last epoch
without each of ``--n-loo`` samples of that epoch (seeded choice) to measure the real
change of the validation loss. Prints, per learning-rate schedule, Kendall tau, Pearson
r and the scale (least-squares slope of real on estimated change) of every variant.

    python benchmarks/bench_loo.py [--width 8] [--n-train 256] [--batch 32] [--epochs 8]
        [--n-loo 100] [--schedules constant cosine] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import ROOT  # noqa: F401  (puts the project root on sys.path)
from scipy.stats import kendalltau, pearsonr
from synth import mnist5k_subset

from sgd_influence import config as C
from sgd_influence import paths
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, is_running_statistic, load_epoch_state, replay


def changes(cfg, data, seed: int, samples: np.ndarray, eps: float = 1.0, jitter: float = 0.0) -> np.ndarray:
    """Real change of the final validation loss when each sample's weight in the window
    goes from 1 to 0 (eps = 1: leave-one-out, the removal path of replay, bit for bit the
    run without the sample), or for eps < 1 its derivative in the weight (times -1) by
    central differences at 1 +- eps: what a first-order estimate approximates.

    ``jitter`` > 0 first multiplies every trainable parameter of the window's start state
    by 1 +- jitter (seeded signs): at float32 rounding level (3e-7, a few units in the last
    place) this is a second, equally valid measurement of the same changes, and the
    agreement of the two bounds what any estimate can reach."""
    rec = Record.load(paths.record(cfg.output, seed))
    eng = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    start = load_epoch_state(cfg.output, seed, rec.n_epochs - 1)
    if jitter:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7177]))
        start = {k: v if is_running_statistic(k) else
                 (v * (1 + jitter * rng.choice([-1.0, 1.0], size=v.shape))).astype(v.dtype)
                 for k, v in start.items()}

    def val_loss(weights):
        eng.net.load_state_dict(start)
        replay(eng, rec, rec.window(1), weights=weights)
        return eng.evaluate_split("val")[0]

    def weighted(j, value):
        w = np.ones(rec.n_train)
        w[j] = value
        return val_loss(w)

    if eps == 1.0:
        base = val_loss(None)
        return np.array([weighted(j, 0.0) - base for j in samples])
    # central differences, both sides through the weighted step (the unweighted step
    # rounds differently, and that difference divided by a small eps would dominate)
    return np.array([(weighted(j, 1.0 - eps) - weighted(j, 1.0 + eps)) / (2 * eps) for j in samples])


def agreement(label: dict, est: np.ndarray, real: np.ndarray, deriv: np.ndarray | None, seconds=np.nan) -> dict:
    row = dict(label, tau=kendalltau(est, real)[0], pearson=pearsonr(est, real)[0],
               scale=float(np.dot(est, real) / np.dot(est, est)), seconds=seconds)
    if deriv is not None:
        row.update(tau_d=kendalltau(est, deriv)[0], pearson_d=pearsonr(est, deriv)[0])
    return row


def measure(cfg, data, seed: int, n_loo: int, jitter: float, fd_eps: float) -> list[dict]:
    run_training(cfg, seed, data)
    rec = Record.load(paths.record(cfg.output, seed))
    window = np.unique(rec.indices[rec.window(1).start:][rec.indices[rec.window(1).start:] >= 0])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x100]))
    samples = np.sort(rng.choice(window, size=min(n_loo, len(window)), replace=False))
    t0 = time.perf_counter()
    real = changes(cfg, data, seed, samples)
    t_loo = time.perf_counter() - t0
    deriv = changes(cfg, data, seed, samples, eps=fd_eps) if fd_eps else None
    rows = []
    sched = dict(schedule=cfg.lr_schedule, method="")
    if jitter:
        again = changes(cfg, data, seed, samples, jitter=jitter)
        rows.append(agreement(dict(sched, bn=f"(LOO again, start x(1+-{jitter:g}))"), again, real, None))
    if deriv is not None:
        rows.append(agreement(dict(sched, bn=f"(FD derivative, eps {fd_eps:g})"), deriv, real, deriv))
    for bn in ("exact", "reference"):
        for method in ("Hara", "Ours"):
            t0 = time.perf_counter()
            est = compute_scores(C.replace(cfg, bn_influence=bn), seed, method, data)[samples]
            rows.append(agreement(dict(schedule=cfg.lr_schedule, bn=bn, method=method), est, real, deriv,
                                  time.perf_counter() - t0))
    rows.append(dict(sched, bn="(leave-one-out replays)", tau=np.nan, pearson=np.nan, scale=np.nan,
                     seconds=t_loo))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--lr-final", type=float, default=None)
    ap.add_argument("--decay-epochs", type=int, default=1)
    ap.add_argument("--n-loo", type=int, default=100)
    ap.add_argument("--schedules", nargs="+", default=["constant", "cosine"], choices=C.LR_SCHEDULES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--jitter", type=float, default=3e-7,
                    help="also measure leave-one-out again from a start state scaled by 1 +- JITTER "
                         "(0 = not): how well two measurements agree bounds what an estimate can reach")
    ap.add_argument("--fd-eps", type=float, default=0.0,
                    help="also measure the derivative in each sample's weight by finite differences "
                         "(weight 1 - EPS); columns tau_d / r_d compare every estimate with it")
    a = ap.parse_args()

    data = prepare(mnist5k_subset(a.n_train, a.n_val, 10, seed=a.seed), a.seed)
    rows = []
    for schedule in a.schedules:
        cfg = C.Config(output=tempfile.mkdtemp(prefix="bench_loo_"), model="cifarnet", width=a.width,
                       n_epochs=a.epochs, infl_epochs=1, batch_size=a.batch, lr=a.lr,
                       lr_schedule=schedule, lr_final=a.lr_final, lr_decay_epochs=a.decay_epochs,
                       augment=a.augment, methods=("Hara", "Ours")).validate()
        rows += measure(cfg, data, a.seed, a.n_loo, a.jitter, a.fd_eps)
    print(f"cifarnet width {a.width}, mnist5k subset n={a.n_train} (val {a.n_val}), batch {a.batch}, "
          f"{a.epochs} epochs, lr {a.lr}, window = last epoch, {a.n_loo} leave-one-out replays, "
          f"seed {a.seed}, augment {a.augment}")
    print(f"{'schedule':9s} {'bn':>34s} {'method':>6s} {'tau':>6s} {'pearson':>8s} {'scale':>6s} "
          f"{'tau_d':>6s} {'r_d':>6s} {'s':>7s}")
    for r in rows:
        print(f"{r['schedule']:9s} {r['bn']:>34s} {r['method']:>6s} {r['tau']:6.3f} {r['pearson']:8.3f} "
              f"{r['scale']:6.2f} {r.get('tau_d', np.nan):6.3f} {r.get('pearson_d', np.nan):6.3f} "
              f"{r['seconds']:7.1f}")


if __name__ == "__main__":
    main()
