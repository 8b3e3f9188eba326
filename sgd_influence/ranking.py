"""One ranking of the data set per method: the per-seed influence averaged over trials.

Every trial scores the training samples of its own split. A sample is named the same way
in every trial by its id (:func:`artifacts.sample_ids`: the row of the training CSV for a
CSV data set, the image's index in the source array for a built-in one), so the scores
of the trials in which it was a training sample can be averaged.
``influence/{method}/influence_mean.csv`` has the per-seed files' columns first, then
two more:

* ``x:image``, ``y:label``: the sample's, from its per-seed rows (the image is the same
  in every trial). The given label is the same in every trial too, unless the run drew
  its label flips per trial (a run made before --label-noise-seed): then it is the most
  common given label over the trials (a tie: the label of the earliest of them);
* ``influence``: the mean over the trials in which the sample was a training sample;
* ``datasource_index``: the id (for a CSV data set the per-seed files' datasource_index;
  for a built-in set the index in its source array, which the image name carries);
* ``influence_sem``: the standard error of that mean, sd / sqrt(n_trials) (sample sd;
  NaN for a sample scored in one trial);
* ``n_trials``: in how many trials the sample was scored.

Rows are sorted ascending by influence (most harmful first; ties in id order). The
analysis writes the file for every method with per-seed influence files (also
``python -m sgd_influence.analyze -o OUT``); ``sgd_influence.scores(out, method)`` reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import data, fileio, paths
from .artifacts import MEAN_COLUMNS, influence_files, read_influence, sample_ids

logger = logging.getLogger(__name__)


def per_seed(out, method: str, seeds=None) -> list[tuple[int, pd.DataFrame]]:
    """(seed, influence file with the sample id in column ``id``) of every trial of
    ``method`` found (``seeds``: only these)."""
    found = []
    for m, seed, path in influence_files(out, [method], seeds):
        if m != method:  # a kept window's results are ranked on their own
            continue
        infl = read_influence(path)
        found.append((seed, infl.assign(id=sample_ids(out, seed, infl))))
    return found


def average(frames: list[tuple[int, pd.DataFrame]], where: str = "") -> pd.DataFrame | None:
    """The averaged ranking (the module docstring's columns) of per-seed frames as
    :func:`per_seed` returns them; None (with a warning) when a trial lists an id twice,
    so its samples cannot be told apart."""
    if not frames:
        return None
    for seed, f in frames:
        if f["id"].duplicated().any():
            logger.warning("%s: seed %d lists a sample id twice; no averaged ranking", where, seed)
            return None
    rows = pd.concat([f.assign(seed=s) for s, f in frames], ignore_index=True)
    rows = rows.sort_values(["seed"], kind="mergesort")
    by_id = rows.groupby("id", sort=True)
    n = by_id.size()
    mean = by_id["influence"].mean()
    sem = by_id["influence"].std(ddof=1) / np.sqrt(n)  # NaN where n = 1
    image = by_id["x:image"].first()
    out = pd.DataFrame({"x:image": image, "y:label": _most_common_label(rows).reindex(n.index),
                        "influence": mean, "datasource_index": n.index.to_numpy(np.int64),
                        "influence_sem": sem, "n_trials": n})
    out = out.reset_index(drop=True).sort_values("influence", kind="mergesort")
    return out.reset_index(drop=True)[list(MEAN_COLUMNS)]


def _most_common_label(rows: pd.DataFrame) -> pd.Series:
    """id -> the given label most trials agree on (a tie: the earliest trial's label)."""
    counts = rows.groupby(["id", "y:label"], sort=False).agg(n=("seed", "size"), first=("seed", "min"))
    counts = counts.reset_index().sort_values(["id", "n", "first"], ascending=[True, False, True],
                                              kind="mergesort")
    return counts.drop_duplicates("id").set_index("id")["y:label"].astype(np.int64)


def mean_ranking(out, method: str, seeds=None) -> tuple[pd.DataFrame, list[int]] | None:
    """(averaged ranking of ``method``, the seeds averaged); None without influence files."""
    try:
        frames = per_seed(out, method, seeds)
    except data.DataError as exc:  # e.g. an x:image that is no built-in set's file name
        logger.warning("%s: %s; no averaged ranking", paths.influence_dir(out, method), exc)
        return None
    table = average(frames, str(paths.influence_dir(out, method)))
    return None if table is None else (table, [s for s, _ in frames])


def write_mean_rankings(out, methods=None, seeds=None) -> dict[str, tuple[pd.DataFrame, list[int]]]:
    """Write ``influence/{method}/influence_mean.csv`` for every method with per-seed
    influence files (``methods``/``seeds``: only these; a file whose content would not
    change is not rewritten); returns method -> (ranking, seeds averaged)."""
    out = Path(out)
    done = {}
    for method in dict.fromkeys(m for m, _s, _p in influence_files(out, methods, seeds)):
        found = mean_ranking(out, method, seeds)
        if found is None:
            continue
        table, used = found
        path = paths.influence_mean(out, method)
        text = table.to_csv(index=False, lineterminator="\n")
        done[method] = found
        if path.exists() and path.read_bytes() == text.encode():
            logger.debug("%s: up to date", path)  # a rerun that changed nothing leaves it alone
            continue
        fileio.write_text(path, text)
        logger.info("wrote %s (%d samples, mean over %d trial(s))", path, len(table), len(used))
    return done
