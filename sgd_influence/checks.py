"""Checks of finished files before they are reused; whether a result is reused.

Every kind of result is reused by one function here (:func:`training_state`,
:func:`influence_state`, :func:`score_reusable`), asked alike by the plan and by the task
that would make the result: by its files alone.

A file that exists is reused only when it reads back whole and matches the run: an
influence CSV has the four columns and one finite row per training sample, a score
CSV one row per replayed epoch, a training run a loadable record, epoch snapshots with
the same arrays, a readable final model, a history of every epoch and (with
--hara-cache) an every-step cache of the right size. Each function returns None for a good file, else a short reason; the caller
names the file and recomputes it (or, for a phase run alone, says how).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import fileio, paths

logger = logging.getLogger(__name__)

INFLUENCE_COLUMNS = ("x:image", "y:label", "influence", "datasource_index")
_reported: set[tuple[str, str]] = set()


def report_damaged(path, problem: str, action: str = "recomputing it") -> None:
    """Warn once per process that ``path`` is damaged and what happens to it."""
    key = (str(path), problem)
    if key not in _reported:
        _reported.add(key)
        logger.warning("%s: damaged (%s); %s", path, problem, action)


def _read_csv(path) -> tuple[pd.DataFrame | None, str | None]:
    try:
        return pd.read_csv(path), None
    except FileNotFoundError:
        return None, "not found"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable CSV: {' '.join(str(exc).split())}"


def _integers(col: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(col)


def influence_problem(path, n_train: int) -> str | None:
    """Why the influence CSV ``path`` cannot be reused for ``n_train`` training samples."""
    df, problem = _read_csv(path)
    if problem:
        return problem
    if tuple(df.columns) != INFLUENCE_COLUMNS:
        return f"columns {','.join(map(str, df.columns))}, expected {','.join(INFLUENCE_COLUMNS)}"
    if len(df) != n_train:
        return f"{len(df)} rows, expected {n_train} (one per training sample)"
    if not (_integers(df["datasource_index"]) and _integers(df["y:label"])):
        return "a label or datasource_index that is not an integer (a cut line?)"
    if not np.isfinite(df["influence"].to_numpy(np.float64)).all():
        return "an influence value that is missing or not finite"
    if df["datasource_index"].duplicated().any():
        return "a datasource_index listed twice"
    return fileio.verify(path)


def facts_problem(path) -> str | None:
    """Why the facts file beside the influence CSV ``path`` (written just before it)
    cannot be reused, else None."""
    facts = Path(path).with_suffix(".json")
    if not facts.exists():
        return f"its facts file {facts.name} is missing"
    try:
        if not isinstance(fileio.read_json(facts), dict):
            return f"its facts file {facts.name} is not a JSON object"
    except fileio.DamagedFile as exc:
        return f"its facts file {facts.name} is damaged ({exc.reason})"
    return fileio.verify(facts)


def missing_image(path, is_image) -> str | None:
    """The first ``x:image`` of an influence file that ``is_image`` (see
    ``data.image_file_check``) rejects: the data set moved, or an image was deleted."""
    df, problem = _read_csv(path)
    if problem or "x:image" not in df:
        return None
    for f in df["x:image"].astype(str):
        if not is_image(f):
            return f
    return None


def score_problem(path, columns, n_rows: int | None = None) -> str | None:
    """Why the score CSV ``path`` cannot be reused (``n_rows``: replayed epochs, when known)."""
    df, problem = _read_csv(path)
    if problem:
        return problem
    if tuple(df.columns) != tuple(columns):
        return f"columns {','.join(map(str, df.columns))}, expected {','.join(columns)}"
    if n_rows is not None and len(df) != n_rows:
        return f"{len(df)} rows, expected {n_rows} (one per replayed epoch)"
    numbers = df.drop(columns=["method"]).to_numpy()
    try:
        finite = np.isfinite(numbers.astype(np.float64)).all()
    except (TypeError, ValueError):
        finite = False
    return fileio.verify(path) if finite else "a value that is missing or not a number"


def training_problem(out, seed: int, cache_from: int | None = None) -> tuple[Path, str] | None:
    """The first damaged file of the finished training run of ``seed``, with the reason;
    then (``cache_from``: first epoch of the every-step cache asked for, None for none)
    the cache, absent ("not found") or not one row of the parameters per step of its window."""
    rec_path = paths.record(out, seed)
    try:
        z = fileio.load_npz(rec_path)
    except fileio.DamagedFile as exc:
        return rec_path, exc.reason
    need = ("seed", "epoch", "lr", "batch_size", "indices", "aug_seeds", "n_train")
    missing = [k for k in need if k not in z]
    if missing:
        return rec_path, f"no array {missing[0]!r}"
    n_steps = len(z["epoch"])
    if not (len(z["lr"]) == len(z["batch_size"]) == len(z["indices"]) == len(z["aug_seeds"]) == n_steps
            and n_steps > 0):
        return rec_path, "arrays of different lengths"
    n_epochs = int(z["epoch"][-1]) + 1
    shapes = None
    for epoch in range(n_epochs + 1):
        snap = paths.epoch_snapshot(out, seed, epoch)
        try:
            arrays = fileio.load_npz(snap)
        except fileio.DamagedFile as exc:
            return snap, exc.reason
        these = {k: v.shape for k, v in arrays.items()}
        if shapes is not None and these != shapes:
            return snap, "arrays differ from those of the initial snapshot"
        if not all(np.isfinite(v).all() for v in arrays.values()):
            return snap, "a parameter that is not finite"
        shapes = these
    model = paths.final_model(out, seed)
    try:
        with h5py.File(model, "r") as f:
            n_arrays = sum(1 for _ in _h5_datasets(f))
    except OSError as exc:
        return model, f"unreadable HDF5: {' '.join(str(exc).split())}"
    if n_arrays != len(shapes):
        return model, f"{n_arrays} arrays, expected {len(shapes)}"
    hist = paths.history(out, seed)
    df, problem = _read_csv(hist)
    if problem or len(df) != n_epochs:
        return hist, problem or f"{len(df)} rows, expected {n_epochs} (one per epoch)"
    # the content read back whole; its bytes must also be those written
    files = [rec_path, model, hist, *(paths.epoch_snapshot(out, seed, e) for e in range(n_epochs + 1))]
    changed = next(((f, why) for f in files if (why := fileio.verify(f))), None)
    if changed or cache_from is None:
        return changed
    steps = paths.step_cache(out, seed, cache_from)
    if not steps.exists():
        return steps, "not found"
    try:
        shape = fileio.npy_shape(steps)
    except fileio.DamagedFile as exc:
        return steps, exc.reason
    window = int(np.count_nonzero(z["epoch"] >= cache_from))
    n_values = sum(int(np.prod(s)) for s in shapes.values())
    if len(shape) != 2 or shape[0] != window or not 0 < shape[1] <= n_values:
        return steps, f"shape {shape}, expected {window} rows (one per step from epoch {cache_from})"
    return (steps, why) if (why := fileio.verify(steps)) else None



def _h5_datasets(group):
    for item in group.values():
        if isinstance(item, h5py.Dataset):
            yield item
        else:
            yield from _h5_datasets(item)


# --------------------------------------------------------------------------- reuse
def training_state(out, seed: int, n_epochs: int, cache_from: int | None = None
                   ) -> tuple[str, tuple[Path, str] | None]:
    """Whether trial ``seed``'s training run of ``n_epochs`` epochs is reused, read back
    once: ("done", None); ("missing", None) when a file of the run is absent; ("damaged",
    (file, why)) for its first file that does not read back whole; for a whole run, the
    every-step cache from epoch ``cache_from`` asked for (None: none), which a replay of
    the run writes: ("no cache", (file, "not found")) or ("damaged cache", (file, why))."""
    files = [paths.record(out, seed), paths.final_model(out, seed), paths.history(out, seed)]
    if not all(f.exists() for f in files + [paths.epoch_snapshot(out, seed, e) for e in range(n_epochs + 1)]):
        return "missing", None
    problem = training_problem(out, seed, cache_from)
    if problem is None:
        return "done", None
    if cache_from is None or problem[0] != paths.step_cache(out, seed, cache_from):
        return "damaged", problem
    return ("no cache" if problem[1] == "not found" else "damaged cache"), problem


def influence_state(out, method: str, seed: int, is_image) -> tuple[str, str | None]:
    """Whether trial ``seed``'s influence file of ``method`` can be reused: ("done", None),
    ("missing", None), ("damaged", why) or ("images moved", an x:image that ``is_image``
    rejects: reusable once its images are named where they are). Checked against the
    training run's record, which must exist."""
    target = paths.influence(out, method, seed)
    if not target.exists():
        return "missing", None
    n_train = int(fileio.load_npz(paths.record(out, seed))["n_train"])
    problem = influence_problem(target, n_train) or facts_problem(target)
    if problem:
        return "damaged", problem
    gone = missing_image(target, is_image)
    return ("done", None) if gone is None else ("images moved", gone)


def score_reusable(path, columns, n_rows: int | None) -> bool:
    """``path`` exists and is a whole score file (``n_rows`` replayed epochs, when known);
    a damaged one is reported."""
    if not Path(path).exists():
        return False
    problem = score_problem(path, columns, n_rows) if n_rows else None
    if problem:
        report_damaged(path, problem)
    return problem is None
