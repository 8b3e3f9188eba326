"""The trajectory of a training run: its record, its parameter snapshots, and replay.

The record (every step's epoch, learning rate, batch size, sample indices and
augmentation seeds) and one snapshot per epoch boundary (every array of the network,
BN running statistics included) together are the run: replaying recorded steps from a
snapshot with :func:`replay` reproduces the trained parameters bit for bit. So any
window of whole epochs can be scored and retrained without training again, and Hara's
parameters of every step can be regenerated (:class:`ReplayedParams`) instead of stored.

Files under ``OUT/train/seed_{s}/`` (paths in :mod:`paths`):

* ``record.npz``: the record (numeric arrays, no pickle); written last, so its presence
  marks a finished run;
* ``snapshots/epoch_{e:03d}.npz``: the state after e epochs (``epoch_000`` = initial);
* ``final.h5``: the trained model in nnabla's own parameter format
  (``nn.load_parameters``), under the names nnabla's parametric functions use;
* ``snapshots/steps_from_epoch_{e:03d}.npy`` (only with ``--hara-cache``): the paper's
  every-step cache, the trainable parameters before every step from epoch e on.

Training writes the trajectory (:class:`TrajectoryWriter`); influence, evaluation and
the analysis read it through this module.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fileio, paths, preprocess
from .bars import progress_bar
from .engine import Engine
from .models.cifarnet import pf_name
from .validation import LR_SCHEDULES

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
    n_train: int

    @property
    def n_steps(self) -> int:
        return int(len(self.epoch))

    @property
    def n_epochs(self) -> int:
        return int(self.epoch[-1]) + 1

    def batch(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        b = int(self.batch_size[s])
        return self.indices[s, :b], self.aug_seeds[s, :b]

    def steps_of(self, first_epoch: int) -> range:
        """The steps from the first of epoch ``first_epoch`` (0-based) to the end."""
        first = int(np.searchsorted(self.epoch, first_epoch))
        return range(first, self.n_steps)

    def window_first_epoch(self, window_epochs: int) -> int:
        """First epoch of the window of the last ``window_epochs`` epochs (0 = all)."""
        if not 0 <= window_epochs <= self.n_epochs:
            raise ValueError(f"--infl-epochs: expected 0 (all) to {self.n_epochs} (the epochs "
                             f"trained), got {window_epochs}")
        return 0 if window_epochs == 0 else self.n_epochs - window_epochs

    def window(self, window_epochs: int) -> range:
        """The steps of the last ``window_epochs`` epochs (0 = every step)."""
        return self.steps_of(self.window_first_epoch(window_epochs))

    def save(self, path) -> None:
        fileio.save_npz(
            path, seed=np.int64(self.seed), epoch=self.epoch, lr=self.lr,
            batch_size=self.batch_size, indices=self.indices, aug_seeds=self.aug_seeds,
            n_train=np.int64(self.n_train),
        )

    @classmethod
    def load(cls, path) -> "Record":
        z = fileio.load_npz(path)
        return cls(
            seed=int(z["seed"]), epoch=z["epoch"], lr=z["lr"], batch_size=z["batch_size"],
            indices=z["indices"], aug_seeds=z["aug_seeds"], n_train=int(z["n_train"]),
        )


def learning_rates(lr: float, n_epochs: int, steps_per_epoch: int, schedule: str = "constant",
                   lr_final: float = 0.0, decay_epochs: int = 1) -> np.ndarray:
    """The learning rate of every step (float64).

    ``constant``: ``lr`` throughout (the paper). Otherwise ``lr`` until the last
    ``decay_epochs`` epochs, which go from ``lr`` (their first step) to ``lr_final``
    (the run's last step) by half a cosine (``cosine``) or a straight line (``linear``),
    or run at ``lr_final`` throughout (``step``)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr-schedule: expected one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    total = n_epochs * steps_per_epoch
    out = np.full(total, float(lr), np.float64)
    if schedule == "constant":
        return out
    n = min(decay_epochs, n_epochs) * steps_per_epoch
    frac = np.arange(n, dtype=np.float64) / max(n - 1, 1) if n > 1 else np.ones(1)
    if schedule == "cosine":
        tail = lr_final + (lr - lr_final) * 0.5 * (1.0 + np.cos(np.pi * frac))
    elif schedule == "linear":
        tail = lr + (lr_final - lr) * frac
    else:
        tail = np.full(n, float(lr_final))
    out[total - n:] = tail
    return out


def make_record(seed: int, n_train: int, n_epochs: int, batch_size: int, lr: float,
                lr_schedule: str = "constant", lr_final: float = 0.0,
                lr_decay_epochs: int = 1) -> Record:
    """The whole schedule of a run: seeded batch order per epoch, running augmentation
    seeds, the learning rate of every step (see :func:`learning_rates`)."""
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
        seed=seed, epoch=epoch, batch_size=sizes,
        lr=learning_rates(lr, n_epochs, steps_per_epoch, lr_schedule, lr_final, lr_decay_epochs),
        indices=indices, aug_seeds=seeds, n_train=n_train,
    )


# --------------------------------------------------------------------------- snapshots
def save_snapshot(path, state) -> None:
    fileio.save_npz(path, **{k.replace("/", "__"): v for k, v in state.items()})


def load_snapshot(path) -> dict[str, np.ndarray]:
    return {k.replace("__", "/"): v for k, v in fileio.load_npz(path).items()}


# --------------------------------------------------------------------------- replay
def replay(engine: Engine, record: Record, steps, removed: np.ndarray | None = None,
           on_epoch_end=None, progress: str | None = None,
           weights: np.ndarray | None = None) -> None:
    """Replay recorded ``steps`` on ``engine`` (whose parameters are the start state).

    ``removed``: boolean mask over training samples to leave out; each step's gradient is
    that of the kept samples' mean times kept/|B| and a step with no sample left is
    skipped. ``weights``: per-sample weights over the training samples instead (the
    counterfactual the influence walk differentiates): a step whose batch has only
    weights 0 and 1 is the removal step above (so w_j = 0 is bit for bit the run without
    j), any other step is :meth:`Engine.weighted_step`. ``on_epoch_end(epoch)`` is called
    after the last step of each epoch.
    """
    if removed is not None and weights is not None:
        raise ValueError("replay: give removed or weights, not both")
    steps = list(steps)
    bar = progress_bar(steps, desc=progress, leave=False, shown=progress is not None, mininterval=1.0)
    for s in bar:
        idx, seeds = record.batch(s)
        full = len(idx)
        lr = float(record.lr[s])
        w = None if weights is None else np.asarray(weights, np.float64)[idx]
        if w is not None and not np.all((w == 0) | (w == 1)):
            engine.weighted_step(idx, seeds, lr, w)
        else:
            if w is not None:
                idx, seeds = idx[w == 1], seeds[w == 1]
            elif removed is not None:
                keep = ~removed[idx]
                idx, seeds = idx[keep], seeds[keep]
            if len(idx):
                engine.step(idx, seeds, lr, full)
        last_of_epoch = s + 1 == record.n_steps or record.epoch[s + 1] != record.epoch[s]
        if on_epoch_end is not None and last_of_epoch:
            on_epoch_end(int(record.epoch[s]))


# --------------------------------------------------------------------------- reading a run
def load_record(out, seed: int) -> Record:
    path = paths.record(out, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no finished training run for seed {seed} "
                                "(run the training phase first)")
    return Record.load(path)


def load_epoch_state(out, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """The network state after ``epoch`` epochs (0 = the initial parameters)."""
    path = paths.epoch_snapshot(out, seed, epoch)
    if not path.exists():
        raise FileNotFoundError(f"{path}: snapshot of epoch {epoch} not found "
                                "(the training run is unfinished or from an older version)")
    return load_snapshot(path)


def load_final_state(out, seed: int, record: Record | None = None) -> dict[str, np.ndarray]:
    record = load_record(out, seed) if record is None else record
    return load_epoch_state(out, seed, record.n_epochs)


# --------------------------------------------------------------------------- nnabla's format
def nnabla_name(name: str) -> str:
    """A built-in network's array name -> the name nnabla's parametric functions give it
    (``conv1/W`` -> ``conv1/conv/W``; see :func:`sgd_influence.models.cifarnet.pf_name`)."""
    return pf_name(name)


def is_running_statistic(name: str) -> bool:
    """BN running mean/variance (by the name ``norm`` gives them): state, not trainable."""
    return name.endswith("/mean") or name.endswith("/var")


def save_nnabla_parameters(path, state, names: dict | None = None,
                           trainable=None) -> None:
    """Save ``state`` with ``nn.save_parameters`` as .h5 (atomically, no global scope used).

    ``names``: array name -> saved name (default: the built-in networks' PF names);
    ``trainable``: the names saved with need_grad (default: all but running statistics)."""
    import nnabla as nn

    params = {}
    for k, v in state.items():
        var = nn.Variable.from_numpy_array(np.asarray(v, np.float32))
        var.need_grad = (k in trainable) if trainable is not None else not is_running_statistic(k)
        params[names[k] if names is not None else nnabla_name(k)] = var
    with fileio.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            nn.save_parameters(fh, params, extension=".h5")


# --------------------------------------------------------------------------- writing a run
class TrajectoryWriter:
    """What training writes besides its log: epoch snapshots, the final model, the
    record (last) and, optionally, the every-step cache of the steps from ``cache_from``.

    Use as a context manager; leaving it with an error removes an unfinished cache.
    """

    def __init__(self, out, seed: int, record: Record, n_trainable: int,
                 cache_from: int | None = None, export_names: dict | None = None,
                 trainable=None):
        self.out, self.seed, self.record = Path(out), seed, record
        self._names, self._trainable = export_names, trainable
        self._cache = None
        self._cache_steps = range(0)
        if cache_from is not None:
            self._cache_steps = record.steps_of(cache_from)
            self._cache = fileio.NpyRowWriter(paths.step_cache(out, seed, cache_from),
                                              len(self._cache_steps), n_trainable)

    def epoch_end(self, epoch: int, state) -> None:
        """The state after ``epoch`` epochs (call with 0 before the first step)."""
        save_snapshot(paths.epoch_snapshot(self.out, self.seed, epoch), state)

    def before_step(self, s: int, flat_params) -> None:
        """``flat_params()`` gives the trainable parameters; called for cached steps only."""
        if self._cache is not None and s in self._cache_steps:
            self._cache.write(flat_params())

    def finish(self, final_state) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        save_nnabla_parameters(paths.final_model(self.out, self.seed), final_state, self._names,
                               self._trainable)
        self.record.save(paths.record(self.out, self.seed))  # last: marks a finished run

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._cache is not None:
            self._cache.discard()


# --------------------------------------------------------------------------- Hara's parameters
def write_step_cache(engine: Engine, out, seed: int, first_epoch: int,
                     progress: str | None = None) -> Path:
    """Write the every-step cache of a finished run by replaying from an epoch snapshot."""
    record = load_record(out, seed)
    steps = record.steps_of(first_epoch)
    engine.net.load_state_dict(load_epoch_state(out, seed, first_epoch))
    path = paths.step_cache(out, seed, first_epoch)
    with fileio.NpyRowWriter(path, len(steps), engine.net.num_trainable()) as cache:
        for s in progress_bar(steps, desc=progress, shown=progress is not None, mininterval=1.0):
            cache.write(engine.net.get_flat())
            replay(engine, record, [s])
    return path


def cached_params(out, seed: int, record: Record, steps: range):
    """``params_at(s)`` read from the every-step cache that covers ``steps``."""
    first_epoch = int(record.epoch[steps.start])
    path = paths.step_cache(out, seed, first_epoch)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no every-step cache for this window (train with "
                                "--hara-cache, or leave it out to regenerate by replay)")
    cache = fileio.load_npy(path, mmap_mode="r")
    start = record.steps_of(first_epoch).start
    if cache.shape[0] != record.n_steps - start:
        raise ValueError(f"{path}: expected {record.n_steps - start} rows, found {cache.shape[0]}")

    def params_at(s: int) -> np.ndarray:
        return np.array(cache[s - start])

    return params_at


def segment_length(n_steps: int) -> int:
    """Steps between in-memory checkpoints: ceil(sqrt(T))."""
    return math.isqrt(n_steps - 1) + 1 if n_steps > 0 else 1


class ReplayedParams:
    """``params_at(s)``: the trainable parameters before step s, regenerated by replay.

    The first call replays ``steps`` once from ``start_state`` on ``engine`` (an engine
    of its own, never the one the influence walk uses) and keeps the full network state
    (BN running statistics included) at every L-th step, L = ceil(sqrt(T)); the newest
    segment's parameters are kept as it passes. A step of another segment replays that
    segment again from its checkpoint and keeps its parameters. Asked newest first, as
    the backward walk does, every step is replayed about twice; memory holds about
    sqrt(T) states and sqrt(T) parameter vectors. Replay is bit-exact, so the values
    equal those training had (and the every-step cache holds).
    """

    def __init__(self, engine: Engine, record: Record, steps: range, start_state,
                 segment: int | None = None, progress: str | None = None):
        if not isinstance(steps, range) or steps.step != 1 or len(steps) == 0:
            raise ValueError("replayed parameters need a non-empty range of consecutive steps")
        self.engine, self.record, self.steps = engine, record, steps
        self.segment = segment or segment_length(len(steps))
        self.progress = progress
        self._start_state = start_state
        self._checkpoints: dict[int, dict] = {}
        self._params: dict[int, np.ndarray] = {}
        self.replayed_steps = 0  # replay work done so far (in steps)

    def _replay(self, steps) -> None:
        replay(self.engine, self.record, steps)
        self.replayed_steps += len(steps)

    def _segment_start(self, s: int) -> int:
        return self.steps.start + (s - self.steps.start) // self.segment * self.segment

    def _forward(self) -> None:
        net = self.engine.net
        net.load_state_dict(self._start_state)
        self._start_state = None
        last = self._segment_start(self.steps.stop - 1)
        bar = progress_bar(range(self.steps.start, last, self.segment), desc=self.progress,
                   shown=self.progress is not None, mininterval=1.0)
        for c in bar:
            self._checkpoints[c] = net.state_dict()
            self._replay(range(c, c + self.segment))
        self._checkpoints[last] = net.state_dict()
        self._fill(last)

    def _fill(self, c: int) -> None:
        """Parameters before every step of the segment starting at ``c`` (the network
        holds the state at ``c``)."""
        self._params = {}
        end = min(c + self.segment, self.steps.stop)
        for s in range(c, end):
            self._params[s] = self.engine.net.get_flat()
            if s + 1 < end:
                self._replay([s])

    def __call__(self, s: int) -> np.ndarray:
        if s not in self.steps:
            raise ValueError(f"step {s} is outside the replayed steps {self.steps.start}.."
                             f"{self.steps.stop - 1}")
        if s not in self._params:
            if not self._checkpoints:
                self._forward()
            else:
                c = self._segment_start(s)
                self.engine.net.load_state_dict(self._checkpoints[c])
                self._fill(c)
        return self._params[s]

    def held_bytes(self) -> int:
        """Bytes of the checkpoints and parameters held now."""
        states = sum(a.nbytes for st in self._checkpoints.values() for a in st.values())
        return int(states + sum(p.nbytes for p in self._params.values()))
