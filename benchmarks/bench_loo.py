"""Leave-one-out fidelity on cifarnet: do the scores predict what retraining does?

Trains cifarnet on a seeded random subset of mnist5k, computes Hara and Ours influence
over the last epoch with both ``--bn-influence`` modes, and replays the last epoch
without each of ``--n-loo`` samples of that epoch (seeded choice) to measure the real
change of the validation loss. Prints, per learning-rate schedule, Kendall tau, Pearson
r and the scale (least-squares slope of real on estimated change) of every variant.

Two more measurements put the numbers in context: the same leave-one-out computed a
second way (through the weighted step, equal in exact arithmetic; row "LOO again"), whose
agreement with the first bounds what any estimate can reach in float32, and with
``--fd-eps`` the derivative in each sample's weight by finite differences (columns
tau_d / r_d). ``--smooth`` runs cifarnet with softplus and average pooling.

    python benchmarks/bench_loo.py [--width 8] [--n-train 256] [--batch 32] [--epochs 8]
        [--n-loo 100] [--schedules constant cosine] [--decay-epochs 1] [--seed 0]
        [--smooth] [--fd-eps 0.01] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import parse_with_smoke  # (also puts the project root on sys.path)
from scipy.stats import kendalltau, pearsonr
from synth import mnist5k_subset

from sgd_influence import config as C
from sgd_influence import paths, validation
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_epoch_state, replay


def changes(cfg, data, seed: int, samples: np.ndarray, how: str = "removal", eps: float = 0.01) -> np.ndarray:
    """Real change of the final validation loss when each sample leaves the window.

    ``how``:

    * ``removal``: leave-one-out by replay's removal path (j's batch runs as a batch of
      |B| - 1; bit for bit the run without j): the ground truth.
    * ``weighted``: the same leave-one-out through the weighted step, w_j = 0 against
      w_j = 1 (j's batch keeps its size). Mathematically equal to ``removal``; in float32
      the two differ by rounding, so their agreement bounds what any estimate can reach.
    * ``fd``: the derivative in w_j (times -1) by central differences at 1 +- ``eps``,
      both sides through the weighted step: what a first-order estimate approximates.
    """
    rec = Record.load(paths.record(cfg.output, seed))
    eng = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    start = load_epoch_state(cfg.output, seed, rec.n_epochs - 1)
    steps = rec.window(1)
    one = np.eye(rec.n_train, dtype=bool)

    def val_loss(removed=None, weights=None, forced_weighted_j=None, w_j=1.0):
        eng.net.load_state_dict(start)
        if forced_weighted_j is None:
            replay(eng, rec, steps, removed, weights=weights)
        else:  # the weighted step on j's batch even at w_j = 0 or 1 (replay takes those
            # through the removal path)
            j = forced_weighted_j
            for s in steps:
                idx, sd = rec.batch(s)
                if j in idx:
                    eng.weighted_step(idx, sd, float(rec.lr[s]), np.where(idx == j, w_j, 1.0))
                else:
                    eng.step(idx, sd, float(rec.lr[s]), len(idx))
        return eng.evaluate_split("val")[0]

    def weighted(j, w_j):
        return val_loss(weights=np.where(one[j], w_j, 1.0))

    if how == "removal":
        base = val_loss()
        return np.array([val_loss(one[j]) - base for j in samples])
    if how == "weighted":
        return np.array([val_loss(forced_weighted_j=j, w_j=0.0) - val_loss(forced_weighted_j=j)
                         for j in samples])
    if how == "fd":
        return np.array([(weighted(j, 1.0 - eps) - weighted(j, 1.0 + eps)) / (2 * eps) for j in samples])
    raise ValueError(f"changes: unknown measurement {how!r}")


def agreement(label: dict, est: np.ndarray, real: np.ndarray, deriv: np.ndarray | None, seconds=np.nan) -> dict:
    row = dict(label, tau=kendalltau(est, real)[0], pearson=pearsonr(est, real)[0],
               scale=float(np.dot(est, real) / np.dot(est, est)), seconds=seconds)
    if deriv is not None:
        row.update(tau_d=kendalltau(est, deriv)[0], pearson_d=pearsonr(est, deriv)[0])
    return row


def measure(cfg, data, seed: int, n_loo: int, again: bool, fd_eps: float) -> list[dict]:
    run_training(cfg, seed, data)
    rec = Record.load(paths.record(cfg.output, seed))
    window = np.unique(rec.indices[rec.window(1).start:][rec.indices[rec.window(1).start:] >= 0])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x100]))
    samples = np.sort(rng.choice(window, size=min(n_loo, len(window)), replace=False))
    t0 = time.perf_counter()
    real = changes(cfg, data, seed, samples)
    t_loo = time.perf_counter() - t0
    deriv = changes(cfg, data, seed, samples, "fd", fd_eps) if fd_eps else None
    rows = []
    sched = dict(schedule=cfg.lr_schedule, method="")
    if again:
        rows.append(agreement(dict(sched, bn="(LOO again, weighted step)"),
                              changes(cfg, data, seed, samples, "weighted"), real, deriv))
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
    ap.add_argument("--schedules", nargs="+", default=["constant", "cosine"], choices=validation.LR_SCHEDULES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--again", action=argparse.BooleanOptionalAction, default=True,
                    help="measure leave-one-out a second time through the weighted step (equal in "
                         "exact arithmetic): how well the two agree bounds what an estimate can reach")
    ap.add_argument("--smooth", action="store_true", help="cifarnet with softplus and average pooling")
    ap.add_argument("--fd-eps", type=float, default=0.0,
                    help="also measure the derivative in each sample's weight by central differences "
                         "(weights 1 +- EPS); columns tau_d / r_d compare every estimate with it")
    a = parse_with_smoke(ap, {"--width": 1, "--n-train": 8, "--n-val": 8, "--batch": 4, "--epochs": 2,
                              "--n-loo": 3, "--fd-eps": 0.01})

    data = prepare(mnist5k_subset(a.n_train, a.n_val, 10, seed=a.seed), a.seed)
    rows = []
    for schedule in a.schedules:
        cfg = C.Config(output=tempfile.mkdtemp(prefix="bench_loo_"), model="cifarnet", width=a.width,
                       n_epochs=a.epochs, infl_epochs=1, batch_size=a.batch, lr=a.lr,
                       lr_schedule=schedule, lr_final=a.lr_final, lr_decay_epochs=a.decay_epochs,
                       augment=a.augment, smooth=a.smooth, methods=("Hara", "Ours")).validate()
        rows += measure(cfg, data, a.seed, a.n_loo, a.again, a.fd_eps)
    print(f"cifarnet{' (smooth)' if a.smooth else ''} width {a.width}, mnist5k subset n={a.n_train} (val {a.n_val}), batch {a.batch}, "
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
