"""Which flipped labels do the scores find? Detection by the time a sample was seen.

Reads a finished run with ``--label-noise`` (every seed of its configuration) and splits
the training samples by where in the influence window they were seen (fifths of the
window's steps, with the learning rates of those steps). Prints, per fifth, averaged over
seeds: the share of its flipped labels that lie in the first 10 % of the whole ranking,
the ROC AUC among the samples of that fifth, and the share of its flipped labels scored
as helpful (influence > 0). Needs a one-epoch window (every sample seen once).

    python benchmarks/bench_visit_time.py -o output/demo6 [--method Hara]
"""

from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the project root on sys.path)
import numpy as np
import pandas as pd

from sgd_influence import config as C
from sgd_influence import detection as D
from sgd_influence import fileio, paths
from sgd_influence.trajectory import load_record

PARTS = 5


def visit_share(record, steps: range) -> np.ndarray:
    """Per training position: where in the window ``steps`` it was seen (0 = first step, < 1)."""
    where = np.full(record.n_train, np.nan)
    for s in steps:
        idx, _ = record.batch(s)
        where[idx] = (s - steps.start) / len(steps)
    return where


def seed_rows(cfg: C.Config, method: str, seed: int) -> list[dict]:
    out = cfg.output
    frame = pd.read_csv(paths.influence(out, method, seed))
    noise = D.read_flipped(out, seed)  # one row per training position, in that order
    flipped = D.flipped_of(frame, noise, str(paths.influence(out, method, seed)))
    record = load_record(out, seed)
    steps = record.window(1)
    position = {row: i for i, row in enumerate(noise["datasource_index"])}
    where = visit_share(record, steps)[[position[r] for r in frame["datasource_index"]]]
    score = frame["influence"].to_numpy()
    in_top = np.arange(len(frame)) < D.n_top(0.10, len(frame))  # the file is sorted
    rows = []
    for k in range(PARTS):
        part = (where >= k / PARTS) & (where < (k + 1) / PARTS)
        first = steps.start + int(np.ceil(k * len(steps) / PARTS))
        last = steps.start + int(np.ceil((k + 1) * len(steps) / PARTS)) - 1
        rows.append(dict(seed=seed, part=k, lr_first=record.lr[first], lr_last=record.lr[last],
                         found=in_top[part & flipped].mean(),
                         auc=D.roc_auc(-score[part], flipped[part]),
                         helpful=(score[part & flipped] > 0).mean()))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True, help="output folder of a finished --label-noise run")
    ap.add_argument("--method", default="Hara", choices=("Hara", "Ours"))
    a = ap.parse_args(argv)
    cfg = C.Config.from_dict(fileio.read_json(paths.run_config(a.output)))
    if not cfg.label_noise:
        print(f"{a.output}: the run has no --label-noise; nothing to detect", file=sys.stderr)
        return 2
    if cfg.window_epochs() != 1:
        print(f"{a.output}: --infl-epochs {cfg.infl_epochs}; this split needs a one-epoch window",
              file=sys.stderr)
        return 2
    rows = pd.DataFrame([r for s in range(cfg.n_trials) for r in seed_rows(cfg, a.method, s)])
    table = rows.groupby("part").mean(numeric_only=True)
    print(f"{a.method}, {cfg.n_trials} seed(s), {a.output}")
    print(f"{'seen at':>12s} {'lr':>17s} {'found in first 10 %':>20s} {'AUC':>6s} {'scored helpful':>15s}")
    for k, r in table.iterrows():
        print(f"{100 * k // PARTS:>4d}-{100 * (k + 1) // PARTS:>3d} %    {r.lr_first:.4f}-{r.lr_last:.4f}"
              f" {r.found:>20.2f} {r.auc:>6.3f} {r.helpful:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
