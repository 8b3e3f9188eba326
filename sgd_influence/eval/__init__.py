"""Evaluation phase: retrain without the worst n samples and score every epoch.

For each method (Hara, Ours, Random), each n of ``-r/--remove_n_list`` and each trial
seed, the recorded training steps of the influence window are replayed from the
epoch snapshot at the window's start with the first n rows of ``influence/{method}/influence_{seed}.csv``
left out (``-ra/--retrain_all``: every epoch from the initial parameters). After each
replayed epoch the validation and test loss and accuracy are written to

    score/{method}/score_delete_worst_{n}_seed_{seed}.csv

with the reference code's columns val_loss, test_loss, val_accuracy, test_accuracy
first, then method, n, seed, epoch (1-based epoch of the training run) and n_train.
n = 0 ("No Removal") is the same for every method: it is computed once per seed and
written into each method's folder. An n not smaller than the training set is skipped
with one warning.

**The noise floor.** Retraining without a few random samples should not change the
model's quality; how much it does anyway is the yardstick for every other difference.
For each seed, each k of ``--noise-floor-k`` and each draw d < ``--noise-floor-draws``
the window is replayed without k samples drawn at random (seeded by seed, k and d,
independently of the Random method), written to

    score/noise_floor/score_draw_{d}_delete_random_{k}_seed_{seed}.csv

(the same columns, method "Noise floor", plus draw). The analysis turns their spread
into the floor (see analyze.py).

Run alone on an output folder whose training and influence phases are finished:
``python -m sgd_influence.eval -o OUT``. When ``OUT/config.json`` exists (written by
train_infl_eval.py) it supplies the settings; flags given here override them. Finished
score files are reused; retrains run in ``--jobs`` worker processes (a local Dask
cluster) or, with ``--scheduler ADDRESS``, on an existing Dask cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import checks, fileio, paths
from .. import config as C
from ..artifacts import (  # noqa: F401  (the score files' layout, part of this module's API)
    FLOOR_COLUMNS,
    FLOOR_METHOD,
    SCORE_COLUMNS,
    VALUES,
    read_floor,
    read_influence,
    read_scores,
    read_u_growth,
)
from ..engine import Engine, load_prepared, model_spec
from ..trajectory import load_epoch_state, load_record, replay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalJob:
    """One retrain: trial ``seed`` without the worst ``n`` samples.

    For n > 0 ``methods`` holds the one method whose influence file ranks the samples;
    for n = 0 (No Removal) it holds every method, and one retrain writes all their files.
    A noise-floor retrain (``draw`` set) removes n random samples, drawn with ``draw``;
    it belongs to no method (``methods`` empty).
    """

    seed: int
    n: int
    methods: tuple[str, ...]
    # replayed epochs = rows of each score file (0: not checked); derived, not part of the job's identity
    epochs: int = field(default=0, compare=False)
    draw: int | None = None

    def __post_init__(self):
        if self.n < 0:
            raise ValueError(f"-r/--remove_n_list: expected non-negative integers, got {self.n}")
        if self.is_floor:
            if self.methods or self.n < 1 or self.draw < 0:
                raise ValueError("a noise-floor retrain removes k >= 1 random samples (draw >= 0) "
                                 "and belongs to no method")
        elif self.n > 0 and len(self.methods) != 1:
            raise ValueError("an evaluation with n > 0 belongs to exactly one method")

    @property
    def is_floor(self) -> bool:
        return self.draw is not None

    @property
    def needs_influence(self) -> str | None:
        """The method whose influence file this retrain reads; None: it needs the training run only."""
        return self.methods[0] if self.n > 0 and not self.is_floor else None

    def targets(self, out) -> list[Path]:
        if self.is_floor:
            return [paths.floor_score(out, self.n, self.draw, self.seed)]
        return [paths.score(out, m, self.n, self.seed) for m in self.methods]

    def done(self, out) -> bool:
        return all(self.reusable(p) for p in self.targets(out))

    def reusable(self, path) -> bool:
        """``path`` is a whole score file of this job (a damaged one is reported)."""
        return checks.score_reusable(path, FLOOR_COLUMNS if self.is_floor else SCORE_COLUMNS, self.epochs)

    @property
    def label(self) -> str:
        if self.is_floor:
            return f"retrain noise floor k={self.n} draw {self.draw} seed {self.seed}"
        who = "No Removal" if self.n == 0 else f"{self.methods[0]} n={self.n}"
        return f"retrain {who} seed {self.seed}"


def plan_jobs(cfg: C.Config, seed: int, n_train: int) -> tuple[list[EvalJob], list[int]]:
    """The evaluation jobs of one seed (finished ones included) and the skipped n values.

    The removal retrains come first, then the noise-floor retrains (every k of
    ``--noise-floor-k`` smaller than the training set, ``--noise-floor-draws`` draws each).
    """
    ns = sorted(set(int(n) for n in cfg.remove_n_list))
    skipped = [n for n in ns if n >= n_train]
    epochs = cfg.n_epochs if cfg.retrain_all else cfg.window_epochs()
    jobs = []
    for n in ns:
        if n >= n_train:
            continue
        if n == 0:
            jobs.append(EvalJob(seed, 0, tuple(cfg.methods), epochs))
        else:
            jobs.extend(EvalJob(seed, n, (m,), epochs) for m in cfg.methods)
    floor_skipped = []
    for k in sorted(set(int(k) for k in cfg.noise_floor_k)):
        if k < n_train:
            jobs.extend(EvalJob(seed, k, (), epochs, draw=d) for d in range(cfg.noise_floor_draws))
        elif cfg.noise_floor_draws > 0:
            floor_skipped.append(k)
    if floor_skipped:
        logger.warning("--noise-floor-k: skipping %s: not smaller than the training set (%d samples)",
                       " ".join(str(k) for k in floor_skipped), n_train)
    return jobs, skipped


def warn_skipped(skipped: list[int], n_train: int) -> None:
    if skipped:
        logger.warning("-r/--remove_n_list: skipping %s: not smaller than the training set (%d samples)",
                       " ".join(str(n) for n in skipped), n_train)


# --------------------------------------------------------------------------- one retrain
def removal_mask(cfg: C.Config, seed: int, method: str, n: int, data) -> np.ndarray:
    """Boolean mask over training positions: the first ``n`` rows of the influence file."""

    path = paths.influence(cfg.output, method, seed)
    problem = checks.influence_problem(path, data.n_train) if path.exists() else None
    if problem:
        raise fileio.damaged(path, problem, "run the influence phase again to recompute it")
    df = read_influence(path)
    rows = df["datasource_index"].to_numpy(np.int64)[:n]
    pos = pd.Index(data.train_rows).get_indexer(rows)
    if (pos < 0).any():
        bad = rows[pos < 0][0]
        raise ValueError(f"{path}: datasource_index {bad} is not a training row of seed {seed}")
    removed = np.zeros(data.n_train, bool)
    removed[pos] = True
    return removed


def floor_mask(seed: int, k: int, draw: int, n_train: int) -> np.ndarray:
    """Boolean mask over training positions: k samples drawn at random for one floor retrain."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1002, k, draw]))
    removed = np.zeros(n_train, bool)
    removed[rng.choice(n_train, size=k, replace=False)] = True
    return removed


def retrain_scores(cfg: C.Config, seed: int, data, removed: np.ndarray | None,
                   progress: str | None = None) -> pd.DataFrame:
    """Replay the window (or every epoch) without ``removed``; one row per replayed epoch."""

    out = Path(cfg.output)
    record = load_record(out, seed)
    if record.n_train != data.n_train:
        raise ValueError(f"{paths.record(out, seed)}: recorded for {record.n_train} training samples, "
                         f"the data of seed {seed} has {data.n_train}")
    engine = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    first_epoch = 0 if cfg.retrain_all else record.window_first_epoch(cfg.window_epochs())
    engine.net.load_state_dict(load_epoch_state(out, seed, first_epoch))
    steps = record.steps_of(first_epoch)
    rows = []

    def on_epoch_end(epoch: int) -> None:
        val_loss, val_accuracy = engine.evaluate_split("val")
        test_loss, test_accuracy = engine.evaluate_split("test")
        rows.append(dict(epoch=epoch + 1, val_loss=val_loss, test_loss=test_loss,
                         val_accuracy=val_accuracy, test_accuracy=test_accuracy))

    replay(engine, record, steps, removed=removed, on_epoch_end=on_epoch_end, progress=progress)
    return pd.DataFrame(rows)


def score_frame(epochs: pd.DataFrame, method: str, n: int, seed: int, n_train: int,
                draw: int | None = None) -> pd.DataFrame:
    """The rows of one score file: the reference's four columns first, then ours."""
    df = epochs.assign(method=method, n=n, seed=seed, n_train=n_train)
    if draw is None:
        return df[list(SCORE_COLUMNS)]
    return df.assign(draw=draw)[list(FLOOR_COLUMNS)]


def run_eval_job(cfg: C.Config, job: EvalJob, data=None, progress: bool = False) -> list[Path]:
    """Write (or reuse) the score file(s) of ``job``; returns their paths. ``data``: the
    prepared data of the job's seed, or a function returning it (called only when a
    model is retrained: a reused or copied No Removal needs none)."""

    out = Path(cfg.output)
    targets = job.targets(out)
    names = (FLOOR_METHOD,) if job.is_floor else job.methods
    missing = [(m, p) for m, p in zip(names, targets) if not job.reusable(p)]
    if not missing:
        logger.info("%s: already scored, reused", job.label)
        return targets
    if job.n == 0:
        redo = {p for _m, p in missing}
        have = [p for p in targets if p not in redo]
        if have:  # No Removal is the same for every method: copy it
            base = pd.read_csv(have[0], float_precision="round_trip")  # the same bytes back
            for m, p in missing:
                fileio.write_csv(p, base.assign(method=m))
            return targets
    data = load_prepared(cfg, job.seed) if data is None else data() if callable(data) else data
    if job.n >= data.n_train:
        raise ValueError(f"-r/--remove_n_list: {job.n} is not smaller than the training set "
                         f"({data.n_train} samples)")
    if job.is_floor:
        removed = floor_mask(job.seed, job.n, job.draw, data.n_train)
    elif job.n == 0:
        removed = None
    else:
        removed = removal_mask(cfg, job.seed, job.methods[0], job.n, data)
    epochs = retrain_scores(cfg, job.seed, data, removed, progress=job.label if progress else None)
    for m, p in missing:
        fileio.write_csv(p, score_frame(epochs, m, job.n, job.seed, data.n_train, draw=job.draw))
    last = epochs.iloc[-1]
    logger.info("%s: epoch %d test accuracy %.4f (val %.4f)", job.label, last["epoch"],
                last["test_accuracy"], last["val_accuracy"])
    return targets


