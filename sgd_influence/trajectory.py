"""The trajectory of a training run: its record, its parameter snapshots, and replay.

The record (every step's epoch, learning rate, batch size, sample indices and
augmentation seeds) and the snapshots (every array of the network, BN running
statistics included) together are the run: replaying recorded steps from a snapshot
with :func:`replay` reproduces the trained parameters bit for bit. Training writes the
trajectory; influence and evaluation read it through this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from . import fileio, preprocess
from .engine import Engine


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
