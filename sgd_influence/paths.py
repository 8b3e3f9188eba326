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


def snapshot(out, seed: int, which: str) -> Path:
    """which: 'initial', 'window_start' or 'final'."""
    return train_dir(out, seed) / "snapshots" / f"{which}.npz"


def window_params(out, seed: int) -> Path:
    """Hara's cache: the trainable parameters before every step of the window (S, P)."""
    return train_dir(out, seed) / "snapshots" / "window_steps.npy"


def history(out, seed: int) -> Path:
    return train_dir(out, seed) / "history.csv"


def cache_size(out, seed: int) -> Path:
    return train_dir(out, seed) / "cache_size.json"


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


def cache_table(out) -> Path:
    return Path(out) / "summary" / "cache_size.csv"


def detection(out) -> Path:
    return Path(out) / "summary" / "detection.csv"


def figure(out, name: str = "result") -> Path:
    return Path(out) / "fig" / f"{name}.png"
