"""Readers of the phases' result files (influence, scores, noise floor, walk facts).

The analysis (summary, detection, figures) reads results only through these, so it
needs nothing of the code that computed them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import checks, fileio, paths

VALUES = ("val_loss", "test_loss", "val_accuracy", "test_accuracy")
SCORE_COLUMNS = VALUES + ("method", "n", "seed", "epoch", "n_train")
FLOOR_COLUMNS = SCORE_COLUMNS + ("draw",)
FLOOR_METHOD = "Noise floor"


def read_influence(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: influence file not found (run the influence phase first)")
    df = pd.read_csv(path)
    expected = checks.INFLUENCE_COLUMNS
    if tuple(df.columns[:4]) != expected:
        raise ValueError(f"{path}: expected columns {','.join(expected)}, got {','.join(df.columns)}")
    return df


def _read_all(pattern: str, out, columns) -> pd.DataFrame:
    files = sorted(Path(out).glob(pattern))
    frames = []
    for f in files:
        problem = checks.score_problem(f, columns)
        if problem:
            raise fileio.damaged(f, problem, "run the evaluation phase again to recompute it")
        frames.append(pd.read_csv(f))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)


def read_scores(out) -> pd.DataFrame:
    """Every score file under ``out`` (empty frame with the score columns when none)."""
    return _read_all(paths.score_glob(), out, SCORE_COLUMNS)


def read_u_growth(out, method: str, seed: int) -> float:
    """The growth factor of |u| over the influence walk of ``method`` and ``seed``
    (``influence/{method}/influence_{seed}.json``); NaN when not recorded (Random)."""
    path = paths.influence_stats(out, method, seed)
    if not path.exists():
        return float("nan")
    return float(fileio.read_json(path).get("u_growth", float("nan")))


def read_floor(out) -> pd.DataFrame:
    """Every noise-floor score file under ``out`` (empty frame with its columns when none)."""
    return _read_all(paths.floor_glob(), out, FLOOR_COLUMNS)
