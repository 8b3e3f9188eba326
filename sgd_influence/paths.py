"""Every output path pattern, one function each. All live under the output folder."""

from __future__ import annotations

import re
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


def train_identity(out) -> Path:
    """The settings the training runs of ``train/`` were made with (every seed's)."""
    return Path(out) / "train" / "config.json"


def learned(out, seed: int) -> Path:
    """Whether the trained model of ``seed`` learned (see train.check_learned)."""
    return train_dir(out, seed) / "learned.json"


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


def train_glob(name: str) -> str:
    """Glob pattern (relative to the output folder) of one file name in every seed's folder."""
    return f"train/seed_*/{name}"


def seed_of_train_file(path) -> int:
    """The seed of a file under ``train/seed_{s}/`` (inverse of :func:`train_dir`)."""
    return int(Path(path).parent.name.split("_", 1)[1])


# --- influence
def influence(out, method: str, seed: int) -> Path:
    return Path(out) / "influence" / method / f"influence_{seed}.csv"


def influence_mean(out, method: str) -> Path:
    """The ranking of ``method`` averaged over trials (written by the analysis)."""
    return Path(out) / "influence" / method / "influence_mean.csv"


def influence_stats(out, method: str, seed: int) -> Path:
    """Facts of the backward walk beside the influence file (growth factor of |u|)."""
    return influence(out, method, seed).with_suffix(".json")


def influence_glob() -> str:
    """Glob pattern (relative to the output folder) matching every influence file."""
    return "influence/*/influence_*.csv"


_INFLUENCE = re.compile(r"^influence_(\d+)\.csv$")


def parse_influence(path) -> tuple[str, int] | None:
    """(method, seed) of an influence file path; None for another file."""
    m = _INFLUENCE.match(Path(path).name)
    return (Path(path).parent.name, int(m.group(1))) if m else None


def influence_dir(out, method: str) -> Path:
    return Path(out) / "influence" / method


def method_identity(out, method: str) -> Path:
    """The identity of one method's influence results (training run + its settings)."""
    return influence_dir(out, method) / "config.json"


# --- evaluation
def score(out, method: str, n: int, seed: int) -> Path:
    return Path(out) / "score" / method / f"score_delete_worst_{n}_seed_{seed}.csv"


def score_glob() -> str:
    """Glob pattern (relative to the output folder) matching every score file."""
    return "score/*/score_delete_worst_*_seed_*.csv"


def floor_score(out, k: int, draw: int, seed: int) -> Path:
    """A noise-floor retrain: trial ``seed`` without ``k`` random samples (draw ``draw``).

    The name ends like a score file (``..._{k}_seed_{seed}.csv``), so a reader that
    parses n and the seed from the last parts of the name reads k as n."""
    return Path(out) / "score" / "noise_floor" / f"score_draw_{draw}_delete_random_{k}_seed_{seed}.csv"


def floor_glob() -> str:
    """Glob pattern (relative to the output folder) matching every noise-floor score file
    (the kept windows' ``noise_floor@...`` folders included)."""
    return "score/noise_floor*/score_draw_*_delete_random_*_seed_*.csv"


FLOOR_FOLDER = "noise_floor"


# --- other windows: the results of another influence window beside the current ones
VARIANT_SEP = "@"


def window_tag(infl_epochs: int) -> str:
    """The name of an influence window: ``last{k}`` (the last k epochs), ``all`` for 0."""
    return "all" if int(infl_epochs) == 0 else f"last{int(infl_epochs)}"


def variant(name: str, tag: str | None) -> str:
    """A method's (or the floor's) folder name for the results of window ``tag``
    (``Hara@last2``); ``name`` itself for None, the current window."""
    return name if tag is None else f"{name}{VARIANT_SEP}{tag}"


def split_variant(name: str) -> tuple[str, str | None]:
    """(method, window tag or None) of a folder name or label (inverse of :func:`variant`)."""
    base, sep, tag = name.partition(VARIANT_SEP)
    return (base, tag) if sep else (name, None)


def score_dir(out, name: str) -> Path:
    """``score/{method}`` (or ``score/noise_floor``)."""
    return Path(out) / "score" / name


def score_method_identity(out, name: str) -> Path:
    return score_dir(out, name) / "config.json"


def score_identity_glob() -> str:
    """Glob pattern (relative to the output folder) matching every score folder's identity."""
    return "score/*/config.json"


# --- analysis
def summary(out) -> Path:
    return Path(out) / "summary" / "summary.csv"


def storage_table(out) -> Path:
    """The paper's storage table (every step of every epoch, Hara, Ours, Hara by replay)."""
    return Path(out) / "summary" / "storage.csv"


def detection(out) -> Path:
    return Path(out) / "summary" / "detection.csv"


def paired_tests(out) -> Path:
    """Each method against Random at each n: paired differences over seeds and the floor."""
    return Path(out) / "summary" / "paired_tests.csv"


def figure(out, name: str = "result") -> Path:
    return Path(out) / "fig" / f"{name}.png"
