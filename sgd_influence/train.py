"""Training phase: plain SGD with a replayable record and parameter snapshots.

Written under ``OUT/train/seed_{s}/``:

* ``record.npz``: per step its epoch, lr, batch size, sample indices and augmentation
  seeds (numeric arrays, no pickle); with ``window_start`` (first step of the influence
  window) and the trial seed.
* ``snapshots/initial.npz``, ``window_start.npz``, ``final.npz``: every array of the
  network (trainable parameters and BN running statistics).
* ``snapshots/window_steps.npy`` (Hara only): the trainable parameters before every
  step of the window, one row a step.
* ``history.csv``: per-epoch train/validation loss and accuracy.
* ``cache_size.json``: bytes of the last-weight cache vs the every-step cache.
* ``config.json``: the configuration that produced them (a different one is refused).

Run alone: ``python -m sgd_influence.train -o OUT --seed 0 ...``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config as C
from . import fileio, paths, preprocess
from .engine import Engine, Prepared
from .models import ModelSpec, snapshot_nbytes

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- record
@dataclass
class Record:
    """Everything needed to replay a training run step by step."""

    seed: int
    epoch: np.ndarray  # (S,) int64
    lr: np.ndarray  # (S,) float64
    batch_size: np.ndarray  # (S,) int64
    indices: np.ndarray  # (S, Bmax) int64, -1 padded
    aug_seeds: np.ndarray  # (S, Bmax) int64, 0 padded
    window_start: int  # first step of the influence window
    n_train: int

    @property
    def n_steps(self) -> int:
        return int(len(self.epoch))

    def batch(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        b = int(self.batch_size[s])
        return self.indices[s, :b], self.aug_seeds[s, :b]

    def window_steps(self) -> range:
        return range(self.window_start, self.n_steps)

    def steps_of(self, first_epoch: int) -> range:
        first = int(np.searchsorted(self.epoch, first_epoch))
        return range(first, self.n_steps)

    def save(self, path) -> None:
        fileio.save_npz(
            path, seed=np.int64(self.seed), epoch=self.epoch, lr=self.lr,
            batch_size=self.batch_size, indices=self.indices, aug_seeds=self.aug_seeds,
            window_start=np.int64(self.window_start), n_train=np.int64(self.n_train),
        )

    @classmethod
    def load(cls, path) -> "Record":
        z = fileio.load_npz(path)
        return cls(
            seed=int(z["seed"]), epoch=z["epoch"], lr=z["lr"], batch_size=z["batch_size"],
            indices=z["indices"], aug_seeds=z["aug_seeds"], window_start=int(z["window_start"]),
            n_train=int(z["n_train"]),
        )


def make_record(seed: int, n_train: int, n_epochs: int, batch_size: int, lr: float,
                window_epochs: int) -> Record:
    """The whole schedule of a run: seeded batch order per epoch, running augmentation seeds."""
    steps_per_epoch = -(-n_train // batch_size)
    S = steps_per_epoch * n_epochs
    epoch = np.repeat(np.arange(n_epochs, dtype=np.int64), steps_per_epoch)
    indices = np.full((S, batch_size), -1, np.int64)
    seeds = np.zeros((S, batch_size), np.int64)
    sizes = np.zeros(S, np.int64)
    counter = 0
    for e in range(n_epochs):
        perm = np.random.default_rng(np.random.SeedSequence([seed, 0xBA7C, e])).permutation(n_train)
        for k in range(steps_per_epoch):
            s = e * steps_per_epoch + k
            idx = perm[k * batch_size : (k + 1) * batch_size]
            b = len(idx)
            sizes[s] = b
            indices[s, :b] = idx
            seeds[s, :b] = preprocess.augmentation_seeds(seed, np.arange(counter, counter + b))
            counter += b
    return Record(
        seed=seed, epoch=epoch, lr=np.full(S, lr, np.float64), batch_size=sizes,
        indices=indices, aug_seeds=seeds,
        window_start=(n_epochs - window_epochs) * steps_per_epoch, n_train=n_train,
    )


# --------------------------------------------------------------------------- snapshots
def save_snapshot(path, state) -> None:
    fileio.save_npz(path, **{k.replace("/", "__"): v for k, v in state.items()})


def load_snapshot(path) -> dict[str, np.ndarray]:
    return {k.replace("__", "/"): v for k, v in fileio.load_npz(path).items()}


def model_spec(cfg: C.Config, data: Prepared) -> ModelSpec:
    return ModelSpec(cfg.model, data.in_shape, data.num_classes, cfg.width)


# --------------------------------------------------------------------------- replay
def replay(engine: Engine, record: Record, steps, removed: np.ndarray | None = None,
           on_epoch_end=None, progress: str | None = None) -> None:
    """Replay recorded ``steps`` on ``engine`` (whose parameters are the start state).

    ``removed``: boolean mask over training samples to leave out; each step's gradient is
    that of the kept samples' mean times kept/|B| and a step with no sample left is
    skipped. ``on_epoch_end(epoch)`` is called after the last step of each epoch.
    """
    steps = list(steps)
    bar = tqdm(steps, desc=progress, leave=False, disable=progress is None, mininterval=1.0)
    for s in bar:
        idx, seeds = record.batch(s)
        full = len(idx)
        if removed is not None:
            keep = ~removed[idx]
            idx, seeds = idx[keep], seeds[keep]
        if len(idx):
            engine.step(idx, seeds, float(record.lr[s]), full)
        last_of_epoch = s + 1 == record.n_steps or record.epoch[s + 1] != record.epoch[s]
        if on_epoch_end is not None and last_of_epoch:
            on_epoch_end(int(record.epoch[s]))


# --------------------------------------------------------------------------- training
def cache_report(state, n_window_steps: int, trainable: int) -> dict:
    one = snapshot_nbytes(state)
    every = one * n_window_steps
    return {
        "last_weight_bytes": one,
        "every_step_bytes": every,
        "window_steps": n_window_steps,
        "ratio_every_step_to_last_weight": every / one,
        "trainable_parameters": trainable,
        "arrays_incl_bn_statistics": int(sum(np.asarray(a).size for a in state.values())),
    }


def train_done(out, seed: int, need_steps: bool) -> bool:
    files = [paths.record(out, seed), paths.snapshot(out, seed, "final"),
             paths.snapshot(out, seed, "window_start"), paths.snapshot(out, seed, "initial"),
             paths.history(out, seed), paths.cache_size(out, seed)]
    if need_steps:
        files.append(paths.window_params(out, seed))
    return all(f.exists() for f in files)


def run_training(cfg: C.Config, seed: int, data: Prepared | None = None, *,
                 every_step: bool | None = None) -> Path:
    """Train trial ``seed`` (or reuse a finished run of the same configuration)."""
    from .engine import load_prepared

    out = Path(cfg.output)
    if every_step is None:
        every_step = "Hara" in cfg.methods
    ident = paths.train_identity(out, seed)
    same = C.check_saved(ident, cfg.train_identity(), cfg.overwrite, "training run")
    if same and train_done(out, seed, every_step):
        logger.info("seed %d: training already finished, reused", seed)
        return paths.train_dir(out, seed)
    if not same and paths.train_dir(out, seed).exists():
        shutil.rmtree(paths.train_dir(out, seed))  # --overwrite of another configuration
    if data is None:
        data = load_prepared(cfg, seed)
    train(cfg, seed, data, every_step=every_step)
    return paths.train_dir(out, seed)


def train(cfg: C.Config, seed: int, data: Prepared, *, every_step: bool) -> Engine:
    out = Path(cfg.output)
    spec = model_spec(cfg, data)
    engine = Engine(spec, seed, data, augment=cfg.augment)
    rec = make_record(seed, data.n_train, cfg.n_epochs, cfg.batch_size, cfg.lr, cfg.window_epochs())
    fileio.write_json(paths.train_identity(out, seed), cfg.train_identity())
    if cfg.label_noise > 0:
        fileio.write_csv(paths.label_noise(out, seed), pd.DataFrame({
            "datasource_index": data.train_rows, "given_label": data.train_y,
            "original_label": data.original_y, "flipped": data.flipped.astype(int)}))
    save_snapshot(paths.snapshot(out, seed, "initial"), engine.net.state_dict())
    n_window = rec.n_steps - rec.window_start
    steps_cache = None
    steps_tmp = None
    if every_step:
        steps_path = paths.window_params(out, seed)
        steps_path.parent.mkdir(parents=True, exist_ok=True)
        steps_tmp = fileio.tmp_name(steps_path)
        steps_cache = np.lib.format.open_memmap(
            steps_tmp, mode="w+", dtype=np.float32, shape=(n_window, engine.net.num_trainable()))
    history = []
    epoch_loss, epoch_correct, epoch_n = 0.0, 0, 0
    bar = tqdm(range(rec.n_steps), desc=f"train seed {seed}", mininterval=1.0,
               disable=not logger.isEnabledFor(logging.INFO))
    for s in bar:
        if s == rec.window_start:
            save_snapshot(paths.snapshot(out, seed, "window_start"), engine.net.state_dict())
        if steps_cache is not None and s >= rec.window_start:
            steps_cache[s - rec.window_start] = engine.net.get_flat()
        idx, seeds = rec.batch(s)
        loss, correct = engine.step(idx, seeds, float(rec.lr[s]), len(idx))
        if not np.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {s} (loss {loss}); lower --lr")
        epoch_loss += loss * len(idx)
        epoch_correct += correct
        epoch_n += len(idx)
        if s + 1 == rec.n_steps or rec.epoch[s + 1] != rec.epoch[s]:
            val_loss, val_acc = engine.evaluate_split("val")
            row = dict(epoch=int(rec.epoch[s]) + 1, train_loss=epoch_loss / epoch_n,
                       train_acc=epoch_correct / epoch_n, val_loss=val_loss, val_acc=val_acc)
            history.append(row)
            logger.info("seed %d epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f",
                        seed, row["epoch"], row["train_loss"], row["train_acc"], val_loss, val_acc)
            epoch_loss, epoch_correct, epoch_n = 0.0, 0, 0
    if steps_cache is not None:
        steps_cache.flush()
        del steps_cache
        Path(steps_tmp).replace(paths.window_params(out, seed))
    final = engine.net.state_dict()
    save_snapshot(paths.snapshot(out, seed, "final"), final)
    fileio.write_csv(paths.history(out, seed), pd.DataFrame(history))
    report = cache_report(final, n_window, engine.net.num_trainable())
    report["every_step_file_bytes"] = (
        paths.window_params(out, seed).stat().st_size if every_step else None)
    report["final_snapshot_file_bytes"] = paths.snapshot(out, seed, "final").stat().st_size
    fileio.write_json(paths.cache_size(out, seed), report)
    rec.save(paths.record(out, seed))  # last: its presence marks a finished run
    return engine


# --------------------------------------------------------------------------- CLI
PHASE_FLAGS = (
    "output", "dataset", "train_csv", "val_csv", "test_csv", "data_dir", "label_noise", "model",
    "width", "lr", "batch_size", "n_epochs", "augment", "infl_epochs", "methods", "context",
    "device_id", "overwrite", "preset",
)


def main(argv=None) -> int:
    from .cli import run_cli

    p = argparse.ArgumentParser(prog="python -m sgd_influence.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_arguments(p, PHASE_FLAGS)
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="trial seed(s) (default: 0)")

    def body(cfg, ns):
        for seed in ns.seed:
            run_training(cfg, seed)
    return run_cli(p, argv, body)


if __name__ == "__main__":
    sys.exit(main())
