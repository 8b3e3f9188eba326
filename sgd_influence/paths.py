"""Every output path pattern, one function each. All live under the output folder."""

from __future__ import annotations

from pathlib import Path


def run_config(out) -> Path:
    return Path(out) / "config.json"


def phase_root(out, phase: str) -> Path:
    """The folder of one phase: 'train', 'influence', 'score', 'summary' or 'fig'."""
    if phase not in ("train", "influence", "score", "summary", "fig"):
        raise ValueError(f"unknown phase folder {phase!r}")
    return Path(out) / phase


# --- training (one folder per trial seed)
def train_dir(out, seed: int) -> Path:
    return Path(out) / "train" / f"seed_{seed}"


def train_identity(out, seed: int) -> Path:
    return train_dir(out, seed) / "config.json"


def record(out, seed: int) -> Path:
    return train_dir(out, seed) / "record.npz"


def epoch_snapshot(out, seed: int, epoch: int) -> Path:
    """Every array of the network after ``epoch`` epochs (0 = the initial parameters)."""
    return train_dir(out, seed) / "snapshots" / f"epoch_{epoch:03d}.npz"


def epoch_snapshot_glob() -> str:
    """Glob pattern (relative to a training folder) matching every epoch snapshot."""
    return "snapshots/epoch_*.npz"


def final_model(out, seed: int) -> Path:
    """The trained model in nnabla's parameter format (nn.load_parameters)."""
    return train_dir(out, seed) / "final.h5"


def step_cache(out, seed: int, first_epoch: int) -> Path:
    """Hara's every-step cache (--hara-cache): the trainable parameters before every step
    from epoch ``first_epoch`` (0-based) to the end, one row a step."""
    return train_dir(out, seed) / "snapshots" / f"steps_from_epoch_{first_epoch:03d}.npy"


def history(out, seed: int) -> Path:
    return train_dir(out, seed) / "history.csv"


def label_noise(out, seed: int) -> Path:
    return train_dir(out, seed) / "label_noise.csv"


# --- influence
def influence(out, method: str, seed: int) -> Path:
    return Path(out) / "influence" / method / f"influence_{seed}.csv"


def influence_identity(out) -> Path:
    return Path(out) / "influence" / "config.json"


# --- evaluation
def score(out, method: str, n: int, seed: int) -> Path:
    return Path(out) / "score" / method / f"score_delete_worst_{n}_seed_{seed}.csv"


def score_glob() -> str:
    """Glob pattern (relative to the output folder) matching every score file."""
    return "score/*/score_delete_worst_*_seed_*.csv"


def score_identity(out) -> Path:
    return Path(out) / "score" / "config.json"


# --- analysis
def summary(out) -> Path:
    return Path(out) / "summary" / "summary.csv"


def storage_table(out) -> Path:
    """The paper's storage table (every step of every epoch, Hara, Ours, Hara by replay)."""
    return Path(out) / "summary" / "storage.csv"


def detection(out) -> Path:
    return Path(out) / "summary" / "detection.csv"


def figure(out, name: str = "result") -> Path:
    return Path(out) / "fig" / f"{name}.png"
