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

A training loss that is not finite, or an epoch's mean loss above DIVERGENCE_FACTOR times
the first step's loss (or log of the number of classes), stops the run with one line
naming --lr. A finished run is reused only when every file reads back whole.

Run alone: ``python -m sgd_influence.train -o OUT --seed 0 ...``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import checks, fileio, paths
from . import config as C
from .engine import Engine, Prepared, model_spec
from .models import snapshot_nbytes
from .trajectory import make_record, save_snapshot

logger = logging.getLogger(__name__)


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


DIVERGENCE_FACTOR = 10.0


def check_divergence(mean_loss: float, epoch: int, first_loss: float, num_classes: int, lr: float) -> None:
    """Stop a run whose training loss exploded: an epoch's mean loss above
    DIVERGENCE_FACTOR times the larger of the first step's loss and log(classes) (the
    loss of a uniform guess). FloatingPointError, one line naming --lr."""
    uniform = float(np.log(max(num_classes, 2)))
    limit = DIVERGENCE_FACTOR * max(first_loss, uniform)
    if not mean_loss <= limit:  # also NaN
        raise FloatingPointError(
            f"--lr: training diverged in epoch {epoch}: mean training loss {mean_loss:.4g} is above "
            f"{limit:.3g} ({DIVERGENCE_FACTOR:g} x the larger of the first step's loss {first_loss:.3g} "
            f"and log({num_classes} classes) = {uniform:.3g}); lower --lr (now {lr:g})")


def train_done(out, seed: int, need_steps: bool) -> bool:
    files = [paths.record(out, seed), paths.snapshot(out, seed, "final"),
             paths.snapshot(out, seed, "window_start"), paths.snapshot(out, seed, "initial"),
             paths.history(out, seed), paths.cache_size(out, seed)]
    if need_steps:
        files.append(paths.window_params(out, seed))
    if not all(f.exists() for f in files):
        return False
    damaged = checks.training_problem(out, seed, need_steps)
    if damaged:
        checks.report_damaged(*damaged, f"training seed {seed} again")
    return damaged is None


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
        fileio.reserve(steps_tmp, steps_tmp.stat().st_size, steps_path)  # a full disk: an error, not SIGBUS
    history = []
    first_loss = float("nan")
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
            raise FloatingPointError(f"--lr: training diverged at step {s} (loss {loss}); lower --lr "
                                     f"(now {cfg.lr:g})")
        epoch_loss += loss * len(idx)
        epoch_correct += correct
        epoch_n += len(idx)
        if s == 0:
            first_loss = loss
        if s + 1 == rec.n_steps or rec.epoch[s + 1] != rec.epoch[s]:
            check_divergence(epoch_loss / epoch_n, int(rec.epoch[s]) + 1, first_loss, data.num_classes,
                             cfg.lr)
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
    "device_id", "overwrite", "wait", "preset",
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
