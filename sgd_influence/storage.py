"""The paper's storage table: what each way of obtaining Hara's parameters keeps.

Rows, for theta = one snapshot (every array of the network, BN running statistics
included, float32), T = the steps of the influence window, k = the epochs trained:

* ``every step of every epoch`` (theta x T x k): parameters of every training step;
* ``Hara (every-step cache)`` (theta x T): the parameters before every step of the window,
  as the reference stores them (``--hara-cache`` here);
* ``Ours (final parameters)`` (theta): the last-weight approximation;
* ``Hara by replay`` (epoch snapshots): k + 1 snapshots on disk; in memory while the walk
  runs about sqrt(T) states and sqrt(T) parameter vectors (:class:`trajectory.ReplayedParams`);
* ``record``: batch order and augmentation seeds of every step, which every method
  needs to walk or retrain (the paper's figures leave it out).

For the run's own data set the sizes of the files on disk are given beside; for MNIST
and CIFAR-10 at the paper's settings (cifarnet width 32, 20 epochs, window = the last
epoch) the rows are computed from the model's array sizes and the step counts, at batch
64 and at batch 32, with the paper's figures and the batch size each figure implies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import paths
from .models import ModelSpec, state_nbytes
from .trajectory import is_running_statistic, load_final_state, load_record, segment_length

# The paper's figures (Suzuki et al. 2021): its storage table and abstract.
PAPER_THETA_BYTES = 1.236e6  # "1.236 MB", the final parameters of the MNIST model
PAPER = {  # dataset -> row -> (bytes used to infer the batch size, text as printed)
    "mnist": {"all": (40e9, "40 GB"), "hara": (1.932e9, "2.0 GB (abstract: 1.932 GB)"),
              "ours": (1.236e6, "1.236 MB")},
    "cifar10": {"all": (30e9, "30 GB"), "hara": (1.5e9, "1.5 GB"), "ours": (1.236e6, "1.236 MB")},
}
PAPER_SETTINGS = {"mnist": (50_000, (1, 32, 32)), "cifar10": (40_000, (3, 32, 32))}
PAPER_EPOCHS = 20
PAPER_BATCHES = (64, 32)

ROWS = ("all", "hara", "ours", "replay", "record")
ROW_NAMES = {
    "all": "every step of every epoch (theta x T x k)",
    "hara": "Hara, every-step cache (theta x T)",
    "ours": "Ours, final parameters (theta)",
    "replay": "Hara by replay (epoch snapshots)",
    "record": "record (batch order, augmentation seeds)",
}
COLUMNS = ("setting", "dataset", "n_train", "batch_size", "steps_per_epoch", "epochs",
           "window_steps", "row", "disk_bytes", "memory_bytes", "file_bytes", "paper",
           "paper_implied_batch")


@dataclass(frozen=True)
class Setting:
    """What the storage of a run depends on."""

    name: str
    dataset: str
    n_train: int
    batch_size: int
    n_epochs: int
    window_epochs: int  # 0 = all epochs
    state_bytes: int  # one snapshot: every array, BN running statistics included
    trainable_bytes: int  # the trainable parameters only (one row of the every-step cache)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    @property
    def n_steps(self) -> int:
        return self.steps_per_epoch * self.n_epochs

    @property
    def window_steps(self) -> int:
        k = self.n_epochs if self.window_epochs == 0 else self.window_epochs
        return self.steps_per_epoch * k


def computed_bytes(st: Setting) -> dict[str, tuple[int, int]]:
    """Row -> (bytes on disk, bytes the influence walk holds in memory for them)."""
    theta, T = st.state_bytes, st.window_steps
    L = segment_length(T)
    replay_memory = math.ceil(T / L) * theta + L * st.trainable_bytes
    record = st.n_steps * (16 * st.batch_size + 24) + 16  # int64 indices and seeds; epoch, lr, size
    return {
        "all": (theta * st.steps_per_epoch * st.n_epochs, theta),
        "hara": (theta * T, theta),
        "ours": (theta, theta),
        "replay": ((st.n_epochs + 1) * theta, replay_memory),
        "record": (record, record),
    }


def paper_implied_batch(dataset: str, row: str, st: Setting) -> float | None:
    """The batch size at which the paper's figure equals 1.236 MB x its step count."""
    fig = PAPER.get(dataset, {}).get(row)
    if fig is None or row == "ours":
        return None
    epochs = st.n_epochs if row == "all" else 1
    steps = fig[0] / PAPER_THETA_BYTES / epochs
    return st.n_train / steps


def table_rows(st: Setting, files: dict[str, int] | None = None, paper: bool = False) -> list[dict]:
    rows = []
    for row, (disk, memory) in computed_bytes(st).items():
        fig = PAPER.get(st.dataset, {}).get(row) if paper else None
        implied = paper_implied_batch(st.dataset, row, st) if paper else None
        rows.append({
            "setting": st.name, "dataset": st.dataset, "n_train": st.n_train,
            "batch_size": st.batch_size, "steps_per_epoch": st.steps_per_epoch,
            "epochs": st.n_epochs, "window_steps": st.window_steps, "row": ROW_NAMES[row],
            "disk_bytes": disk, "memory_bytes": memory,
            "file_bytes": (files or {}).get(row),
            "paper": fig[1] if fig else None,
            "paper_implied_batch": None if implied is None else round(implied, 2),
        })
    return rows


def paper_settings() -> list[Setting]:
    out = []
    for ds, (n_train, shape) in PAPER_SETTINGS.items():
        every, trainable = state_nbytes(ModelSpec("cifarnet", shape, 10, 32))
        for b in PAPER_BATCHES:
            name = f"{'MNIST' if ds == 'mnist' else 'CIFAR-10'}, paper settings, batch {b}"
            out.append(Setting(name, ds, n_train, b, PAPER_EPOCHS, 1, every, trainable))
    return out


def run_files(out, seed: int, first_window_epoch: int) -> dict[str, int]:
    """Sizes of the files of a run that correspond to the rows (those present; the
    every-step cache only with --hara-cache)."""
    tdir = paths.train_dir(out, seed)
    files = {
        "ours": paths.final_model(out, seed),
        "record": paths.record(out, seed),
        "hara": paths.step_cache(out, seed, first_window_epoch),
    }
    sizes = {k: p.stat().st_size for k, p in files.items() if p.exists()}
    snaps = list(Path(tdir).glob(paths.epoch_snapshot_glob()))
    if snaps:
        sizes["replay"] = sum(p.stat().st_size for p in snaps)
    return sizes


def run_setting(out, seed: int, window_epochs: int, name: str | None = None) -> Setting:
    """The storage setting of a finished training run (read from its trajectory)."""

    rec = load_record(out, seed)
    state = load_final_state(out, seed, rec)
    every = sum(a.nbytes for a in state.values())
    trainable = sum(a.nbytes for k, a in state.items() if not is_running_statistic(k))
    window_epochs = min(window_epochs, rec.n_epochs)
    return Setting(name or f"this run (seed {seed})", "this run", rec.n_train,
                   int(rec.batch_size.max()), rec.n_epochs, window_epochs, int(every), int(trainable))


def storage_table(run_settings: list[tuple[Setting, dict[str, int]]]) -> pd.DataFrame:
    rows = []
    for st, files in run_settings:
        rows += table_rows(st, files)
    for st in paper_settings():
        rows += table_rows(st, paper=True)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["file_bytes"] = df["file_bytes"].astype("Int64")
    return df


def human(b: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.3f} {unit}"
    return f"{b:.0f} B"


def format_table(df: pd.DataFrame) -> str:
    """The table as printed text, one block per setting."""
    lines = []
    for name, g in df.groupby("setting", sort=False):
        r0 = g.iloc[0]
        lines.append(f"{name}: {int(r0['n_train'])} samples, batch {int(r0['batch_size'])}, "
                     f"T = {int(r0['window_steps'])} window steps, k = {int(r0['epochs'])} epochs")
        for _, r in g.iterrows():
            cells = [f"  {r['row']:44s}", f"disk {human(r['disk_bytes']):>11s}",
                     f"memory {human(r['memory_bytes']):>11s}"]
            if not pd.isna(r["file_bytes"]):
                cells.append(f"files {human(r['file_bytes'])}")
            if isinstance(r["paper"], str):
                cells.append(f"paper {r['paper']}")
                if not pd.isna(r["paper_implied_batch"]):
                    cells.append(f"(implies batch {r['paper_implied_batch']:.1f})")
            lines.append("  ".join(cells))
    return "\n".join(lines)
