"""Label-noise benchmark: do Hara, Ours and cleanlab find the labels we flipped?

Runs the whole pipeline with ``--label-noise`` (by default on the demo preset: mnist5k,
cifarnet width 8, 2 trial seeds, see ``presets.PRESETS``; 10 % of the 3,000 training labels
flipped; ``-r 0`` so the evaluation phase only retrains No Removal), then puts cleanlab
beside it on the same noisy training set of each seed: out-of-sample predicted probabilities from
K-fold cross-validation (default 4 folds) with the same model family and settings
(the project's cifarnet of the run's width, epochs, learning rate, batch size and
augmentation, trained with the project's Engine on K-1 folds and predicting the held-out
fold), ranked by ``cleanlab.rank.get_label_quality_scores`` (lowest quality first).

Prints one table, mean ± std over seeds: recall of the flipped samples within the first
1/5/10/20 % of each ranking and the ROC AUC, for Hara, Ours, cleanlab and Random, plus
the best possible recall; and how many samples cleanlab's ``find_label_issues`` flags.

    python benchmarks/bench_label_noise.py -o output/bench_label_noise [--noise 0.1]
        [--folds 4] [--jobs 2] [--smoke] [any train_infl_eval.py flag, e.g. -e 4 -nt 3 --infl-epochs 0]

Extra flags go to ``train_infl_eval.py`` after ``--preset demo --label-noise NOISE -r 0``
(so they override the preset). ``--smoke`` checks that the script runs, at the smallest
sizes: 2 folds, one worker, and before the extra flags SMOKE_FLAGS and a CSV data set of
100 mnist5k digits (80 train and validation, 20 test) written to ``OUT/bench/smoke_data``.
Finished pipeline files and cross-validated probabilities
(``OUT/bench/cleanlab_probs_{seed}.npz``, kept with the configuration that made them)
are reused by a second run.

Run time on 2 CPU cores (cifarnet width 8, window = last epoch), measured: the demo
preset (10 epochs) about 9 minutes (pipeline ~5.5 min, cross-validation ~1.5 min per
seed; 538 s for 6 seeds on a finished 6-seed run); ``-e 4`` about 8 minutes; ``-e 12`` about 12 minutes; the whole-run window
``-e 4 --infl-epochs 0`` about 13 minutes. The table is also saved to
``OUT/bench/label_noise.csv`` and the curves (cleanlab included) to
``OUT/bench/detection.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from _common import parse_with_smoke, smoke_csv  # (also puts the project root on sys.path)

from sgd_influence import config as C
from sgd_influence import detection as D
from sgd_influence import fileio, paths
from sgd_influence.cli import setup_logging
from sgd_influence.figures import plot_detection

EVAL_BATCH = 250
# --smoke: train_infl_eval.py flags (before the extra ones), with the data set of _common.smoke_csv
SMOKE_FLAGS = ["-e", "1", "-nt", "1", "--width", "1", "--lr-decay-epochs", "1", "--batch-size", "8",
               "--noise-floor-draws", "0"]
log = logging.getLogger("bench_label_noise")


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Seeded assignment of n samples to folds 0..folds-1 (sizes differ by at most one)."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0xC1EA])).permutation(n)
    fold = np.empty(n, np.int64)
    for k, part in enumerate(np.array_split(perm, folds)):
        fold[part] = k
    return fold


def cross_val_fold(cfg_dict: dict, seed: int, fold: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Train the run's network on every fold but ``fold``; softmax of the held-out fold."""
    import nnabla.functions as F

    from sgd_influence import preprocess
    from sgd_influence.context import set_context
    from sgd_influence.engine import Engine, load_prepared, model_spec
    from sgd_influence.models import input_variables
    from sgd_influence.trajectory import make_record, replay

    cfg = C.Config.from_dict(cfg_dict)
    set_context(cfg.context, cfg.device_id)
    data = load_prepared(cfg, seed)  # the same noisy labels as the pipeline's run
    which = fold_of(data.n_train, folds, seed)
    held, keep = np.flatnonzero(which == fold), np.flatnonzero(which != fold)
    sub = dataclasses.replace(
        data, train_x=data.train_x[keep], train_y=data.train_y[keep], train_rows=data.train_rows[keep],
        train_paths=tuple(np.asarray(data.train_paths, object)[keep]), flipped=data.flipped[keep],
        original_y=data.original_y[keep])
    model_seed = 1000 * (seed + 1) + fold  # not the pipeline's own initialisation
    engine = Engine(model_spec(cfg, sub), model_seed, sub, augment=cfg.augment)
    rec = make_record(model_seed, sub.n_train, cfg.n_epochs, cfg.batch_size, cfg.lr, **cfg.lr_schedule_args())
    replay(engine, rec, range(rec.n_steps))
    graphs = {}
    probs = []
    for start in range(0, len(held), EVAL_BATCH):
        rows = held[start : start + EVAL_BATCH]
        if len(rows) not in graphs:
            x, _t = input_variables(len(rows), data.in_shape)
            graphs[len(rows)] = (x, F.softmax(engine.net.logits(x, bn="eval"), axis=1))
        x, p = graphs[len(rows)]
        x.d = preprocess.normalize(data.train_x[rows])
        p.forward(clear_buffer=True)
        probs.append(p.d.copy())
    return held, np.concatenate(probs).astype(np.float64)


def cross_val_probs(cfg: C.Config, seed: int, folds: int, pool) -> np.ndarray:
    """Out-of-sample predicted probabilities of every training sample (cached)."""
    cache = Path(cfg.output) / "bench" / f"cleanlab_probs_{seed}.npz"
    ident_path = cache.with_suffix(".json")
    ident = {**cfg.train_identity(), "folds": folds}
    if cache.exists() and ident_path.exists() and fileio.read_json(ident_path) == ident:
        return fileio.load_npz(cache)["probs"]
    jobs = [pool.submit(cross_val_fold, cfg.to_dict(), seed, k, folds) for k in range(folds)]
    parts = [j.result() for j in jobs]
    n = sum(len(h) for h, _p in parts)
    probs = np.zeros((n, parts[0][1].shape[1]))
    for held, p in parts:
        probs[held] = p
    fileio.save_npz(cache, probs=probs)
    fileio.write_json(ident_path, ident)  # written last: marks the cache as finished
    return probs


def cleanlab_rows(cfg: C.Config, seeds, folds: int, jobs: int):
    """Detection metrics of cleanlab's label-quality ranking per seed, and find_label_issues."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    rows, curves, flagged = [], [], []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        for seed in seeds:
            t0 = time.perf_counter()
            probs = cross_val_probs(cfg, seed, folds, pool)
            noise = D.read_flipped(cfg.output, seed)  # rows in training order
            labels = noise["given_label"].to_numpy()
            flipped = noise["flipped"].to_numpy(bool)
            pred, which = probs.argmax(1), fold_of(len(labels), folds, seed)
            acc = float((pred == labels).mean())
            true_acc = [float((pred == noise["original_label"].to_numpy())[which == k].mean())
                        for k in range(folds)]
            quality = get_label_quality_scores(labels, probs)  # low = likely mislabelled
            issues = find_label_issues(labels, probs)
            rows.append({"method": "cleanlab", "seed": seed, "n_train": len(labels),
                         "n_flipped": int(flipped.sum()), **D.ranking_metrics(quality, flipped)})
            curves.append(D.detection_curve(quality, flipped))
            flagged.append((int(issues.sum()), int((issues & flipped).sum()), int(flipped.sum()), acc))
            print(f"seed {seed}: cross-validated probabilities ({folds} folds) in "
                  f"{time.perf_counter() - t0:.0f} s; agreement with the given labels {acc:.3f}; "
                  "held-out accuracy on the true labels per fold "
                  + " ".join(f"{a:.3f}" for a in true_acc), flush=True)
    return pd.DataFrame(rows), curves, flagged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="output/bench_label_noise", help="output folder of the run")
    ap.add_argument("--noise", type=float, default=0.1, help="fraction of training labels flipped")
    ap.add_argument("--folds", type=int, default=4, help="cross-validation folds for cleanlab")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (0 = number of cores)")
    a, extra = parse_with_smoke(ap, {"--folds": 2, "--jobs": 1}, argv, known=True,
                                also=f", then {' '.join(SMOKE_FLAGS)} on a CSV data set of 100 digits")
    setup_logging()

    import train_infl_eval  # at the project root, which _common puts on sys.path

    if a.smoke:
        train_csv, test_csv = smoke_csv(Path(a.output) / "bench" / "smoke_data")
        extra = [*SMOKE_FLAGS, "--train-csv", str(train_csv), "--test-csv", str(test_csv), *extra]
    t0 = time.perf_counter()
    flags = ["--preset", "demo", "--label-noise", str(a.noise), "-r", "0", "-o", a.output]
    if a.jobs:
        flags += ["--jobs", str(a.jobs)]
    print("pipeline: train_infl_eval.py " + " ".join(flags + extra), flush=True)
    rc = train_infl_eval.main(flags + extra)
    if rc:
        return rc
    t_pipe = time.perf_counter() - t0
    cfg = C.Config.from_dict(fileio.read_json(paths.run_config(a.output)))
    seeds = list(range(cfg.n_trials))

    trials, curves, share = D.detection_results(a.output, seeds=seeds)
    t1 = time.perf_counter()
    clean, clean_curves, flagged = cleanlab_rows(cfg, seeds, a.folds, a.jobs or cfg.n_jobs())
    t_cv = time.perf_counter() - t1

    order = {m: i for i, m in enumerate(("Hara", "Ours", "cleanlab", "Random"))}
    both = pd.concat([trials, clean], ignore_index=True)
    both = both.iloc[np.argsort([order.get(m, 9) for m in both["method"]], kind="stable")]
    table = D.summarize(both)
    fileio.write_csv(Path(a.output) / "bench" / "label_noise.csv", table)
    curves = {m: curves[m] for m in ("Hara", "Ours") if m in curves} | (
        {"cleanlab": clean_curves}) | ({"Random": curves["Random"]} if "Random" in curves else {})
    plot_detection(curves, share, Path(a.output) / "bench" / "detection.png")

    n, k = int(both["n_train"].iloc[0]), int(both["n_flipped"].iloc[0])
    title = (f"{cfg.dataset}, {cfg.model} width {cfg.width}, {cfg.n_epochs} epochs, "
             f"{cfg.label_noise:.0%} labels flipped ({k} of {n}), {len(seeds)} seed(s); "
             + f"cleanlab on {a.folds}-fold cross-validated probabilities")
    print()
    print(D.format_table(table, title))
    best = "  ".join(f"{min(1.0, D.n_top(p / 100, n) / k):.3f}" for p in D.PERCENTS)
    print(f"best possible recall@1/5/10/20 %: {best}")
    for seed, (n_flag, hit, n_flip, _acc) in zip(seeds, flagged):
        print(f"cleanlab find_label_issues, seed {seed}: flags {n_flag} samples, {hit} of them flipped "
              f"(precision {hit / max(n_flag, 1):.3f}, recall {hit / n_flip:.3f})")
    print(f"time: pipeline {t_pipe:.0f} s (reused files count as 0), cross-validation {t_cv:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
