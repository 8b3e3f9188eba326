"""Readers of the phases' result files (influence, scores, noise floor, walk facts).

The analysis (summary, detection, figures, the averaged ranking) reads results only
through these, so it needs nothing of the code that computed them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import checks, data, fileio, paths
from . import config as C

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


MEAN_COLUMNS = checks.INFLUENCE_COLUMNS + ("influence_sem", "n_trials")


def read_influence_mean(path) -> pd.DataFrame:
    """An averaged ranking, ``influence/{method}/influence_mean.csv`` (see ranking.py)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: averaged ranking not found (run the analysis first)")
    df = pd.read_csv(path)
    if tuple(df.columns) != MEAN_COLUMNS:
        raise ValueError(f"{path}: expected columns {','.join(MEAN_COLUMNS)}, got {','.join(df.columns)}")
    return df


def influence_files(out, methods=None, seeds=None) -> list[tuple[str, int, Path]]:
    """(method, seed, path) of every per-seed influence file of ``out``, in method
    (registration order) then seed order; ``methods``/``seeds`` restrict them."""
    found = []
    for p in Path(out).glob(paths.influence_glob()):
        parsed = paths.parse_influence(p)
        if parsed is None:
            continue
        method, seed = parsed
        if methods is not None and not selected(method, methods):
            continue
        if seeds is not None and seed not in seeds:
            continue
        found.append((method, seed, p))
    return sorted(found, key=lambda t: (label_key(t[0]), t[1]))


def selected(label: str, methods) -> bool:
    """Whether results labelled ``label`` belong to ``methods``: by name, or by the
    method's name for a kept window's (``Hara@last1`` with ``Hara``)."""
    return label in methods or paths.split_variant(label)[0] in methods


def label_key(label: str) -> tuple:
    """Sort key of a method label: registration order (then unknown names by name), the
    current window before the kept ones (``Hara`` before ``Hara@last1``)."""
    base, tag = paths.split_variant(label)
    order = C.method_names()
    rank = order.index(base) if base in order else len(order)
    return (rank, base, tag is not None, tag or "")


def dataset_of(out, seed: int) -> str | None:
    """The data set trial ``seed`` of ``out`` was trained on, from its saved training
    identity (else the run's configuration); None when neither is saved."""
    for path in (paths.train_identity(out), paths.run_config(out)):
        if Path(path).exists():
            return fileio.read_json(path).get("dataset")
    return None


def sample_ids(out, seed: int, infl: pd.DataFrame) -> np.ndarray:
    """The trial-independent id of each row of trial ``seed``'s influence file ``infl``:
    its ``datasource_index`` (a CSV data set: the row of the training CSV), or for a
    built-in data set, whose datasource_index is a position in that trial's split, the
    image's index in the set's source array, read from ``x:image``
    (:func:`data.source_index`)."""
    if dataset_of(out, seed) in data.BUILTIN:
        return data.source_index(infl["x:image"].tolist())
    return infl["datasource_index"].to_numpy(np.int64)


def _read_all(pattern: str, out, columns) -> pd.DataFrame:
    files = sorted(Path(out).glob(pattern))
    frames = []
    for f in files:
        problem = checks.score_problem(f, columns)
        if problem:
            raise fileio.damaged(f, problem, "run the evaluation phase again to recompute it")
        df = pd.read_csv(f)
        tag = paths.split_variant(f.parent.name)[1]
        if tag is not None:  # a kept window's results: labelled with it (``Hara@last1``)
            df["method"] = [paths.variant(m, tag) for m in df["method"]]
        frames.append(df)
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


def shared_by_windows(out) -> set[str]:
    """The score folders (``Random``, ``noise_floor``, ...) whose retrains replayed every
    epoch (``-ra``): their scores do not depend on the influence window, so they serve as
    the baseline of every kept window's results too."""
    found = set()
    for path in Path(out).glob(paths.score_identity_glob()):
        try:
            saved = fileio.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and saved.get("retrain_all") is True:
            found.add(path.parent.name)
    return found


def read_floor(out) -> pd.DataFrame:
    """Every noise-floor score file under ``out`` (empty frame with its columns when none)."""
    return _read_all(paths.floor_glob(), out, FLOOR_COLUMNS)


def not_learned_line(seed: int, facts: dict, in_shape=None) -> str:
    """The one line that says trial ``seed``'s model did not learn (``facts``: its
    ``learned.json``, see train.check_learned)."""
    shape = f"; check that the network suits images of {'x'.join(map(str, in_shape))}" if in_shape else ""
    return (f"seed {seed}: the model did not learn: validation accuracy {facts['val_accuracy']:.3f} "
            f"against {facts['majority_rate']:.3f} for always answering the most common class, "
            f"training loss {facts['first_loss']:.3f} at the first step and "
            f"{facts['final_train_loss']:.3f} in the last of {facts['epochs']} epoch(s); influence "
            f"scores of a model that has not learned say little about its data: try more epochs "
            f"(-e), another --lr{shape}")


def not_learned(out, seeds=None) -> list[str]:
    """The not-learned line of every trial of ``out`` whose saved check says so."""
    lines = []
    for path in sorted(Path(out).glob(paths.train_glob(paths.learned(out, 0).name))):
        seed = int(path.parent.name.rpartition("_")[2])
        if seeds is not None and seed not in seeds:
            continue
        try:
            facts = fileio.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(facts, dict) and facts.get("learned") is False:
            lines.append(not_learned_line(seed, facts))
    return lines
