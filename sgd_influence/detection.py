"""Label-noise detection: how well each ranking finds the training labels we flipped.

With ``--label-noise p`` the training phase flips the labels of round(p * N) training
samples and writes which ones to ``train/seed_{s}/label_noise.csv``. An influence file
ranks the training samples from most harmful (most negative influence) to most
helpful; a good ranking puts the flipped samples first. For every method and seed this
module measures

* ``recall_at_{k}pct``: the fraction of the flipped samples among the first
  round(k/100 * N) rows of the ranking (k = 1, 5, 10, 20), i.e. what a person finds by
  inspecting k % of the data in the order the method suggests;
* ``auc``: the area under the ROC curve of "flipped" against the score -influence,
  rank based (Mann-Whitney U, ties counted one half): the probability that a random
  flipped sample is ranked more harmful than a random clean one. 0.5 is chance.

Written under the output folder: ``summary/detection.csv``, one ``row = trial`` line
per (method, seed), then per method the mean (``row = mean``) and sample standard
deviation (``row = std``) over seeds, then per method the metrics of the ranking
averaged over trials (``row = mean of trials``, :mod:`ranking`; ``n_seeds`` trials
averaged, ``n_train`` the samples it ranks, ``n_flipped`` those flipped), measured
against each sample's flipped mark. That row needs the same flips in every trial (a
sample flipped in one trial is flipped in every trial that scores it: the flips of
--label-noise-seed); a run whose flips differ between trials (made before it) has none.
``u_growth`` is the growth factor of |u| over the method's influence walk (the mean
row: geometric mean over seeds), which says how far the walk amplified a few directions. The figures (``fig/detection.png``, the detection
curves returned here, and ``fig/worst_samples.png``) are drawn by figures.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from . import artifacts, fileio, paths, ranking
from . import config as C
from .artifacts import read_u_growth

logger = logging.getLogger(__name__)

PERCENTS = (1, 5, 10, 20)
RECALL_COLUMNS = tuple(f"recall_at_{k}pct" for k in PERCENTS)
METRIC_COLUMNS = RECALL_COLUMNS + ("auc",)
DETECTION_COLUMNS = ("row", "method", "seed", "n_seeds", "n_train", "n_flipped") + METRIC_COLUMNS + (
    "u_growth",)
CURVE_POINTS = 501


# --------------------------------------------------------------------------- metrics
def n_top(fraction: float, n: int) -> int:
    """Rows inspected for a fraction of a data set of n rows: round(fraction * n), at least 1."""
    return max(1, int(round(fraction * n))) if n else 0


def recall_at(flipped_ranked, percents=PERCENTS) -> dict[int, float]:
    """Recall of the flipped samples among the first k % rows of a ranking.

    ``flipped_ranked``: booleans in ranking order (most suspicious first).
    Returns {k: recall}; NaN when nothing was flipped.
    """
    f = np.asarray(flipped_ranked, bool)
    total = int(f.sum())
    found = np.concatenate([[0], np.cumsum(f)])
    return {k: (float(found[n_top(k / 100, len(f))]) / total if total else float("nan"))
            for k in percents}


def roc_auc(suspicion, flipped) -> float:
    """Rank-based ROC AUC: P(score of a flipped sample > score of a clean one), ties 1/2.

    ``suspicion``: higher = more likely mislabelled (for influence: -influence).
    NaN when either class is empty.
    """
    s = np.asarray(suspicion, np.float64)
    y = np.asarray(flipped, bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks of ties, 1-based
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ranking_metrics(influence, flipped) -> dict[str, float]:
    """recall@k and AUC of one ranking; ``influence`` ascending = most harmful first.

    Rows with equal influence keep their given order (stable sort) for recall@k.
    """
    infl = np.asarray(influence, np.float64)
    flipped = np.asarray(flipped, bool)
    order = np.argsort(infl, kind="mergesort")
    rec = recall_at(flipped[order])
    out = {f"recall_at_{k}pct": v for k, v in rec.items()}
    out["auc"] = roc_auc(-infl, flipped)
    return out


def detection_curve(influence, flipped, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(fraction inspected, fraction of flipped samples found) on a regular grid."""
    infl = np.asarray(influence, np.float64)
    flipped = np.asarray(flipped, bool)
    f = flipped[np.argsort(infl, kind="mergesort")]
    found = np.concatenate([[0], np.cumsum(f)]) / max(int(f.sum()), 1)
    grid = np.linspace(0.0, 1.0, points)
    idx = np.rint(grid * len(f)).astype(int)
    return grid, found[idx]


# --------------------------------------------------------------------------- files
def read_flipped(out, seed: int) -> pd.DataFrame | None:
    """``train/seed_{s}/label_noise.csv`` (datasource_index, given/original label, flipped)."""
    path = paths.label_noise(out, seed)
    if not path.exists():
        return None
    df = pd.read_csv(path)
    df["flipped"] = df["flipped"].astype(bool)
    return df


def _saved_config(out) -> C.Config | None:
    path = paths.run_config(out)
    return C.Config.from_dict(fileio.read_json(path)) if path.exists() else None


def influence_files(out, methods=None, seeds=None) -> list[tuple[str, int, Path]]:
    """(method, seed, path) of every influence file of ``out``, in method then seed order."""
    return artifacts.influence_files(out, methods, seeds)


def flipped_of(influence: pd.DataFrame, noise: pd.DataFrame, where: str = "") -> np.ndarray:
    """The flipped flag of each row of an influence file (matched by datasource_index)."""
    flags = noise.set_index("datasource_index")["flipped"]
    missing = ~influence["datasource_index"].isin(flags.index)
    if missing.any():
        raise ValueError(f"{where}: {int(missing.sum())} datasource_index value(s) not in "
                         "label_noise.csv (influence and training of different runs?)")
    return flags.loc[influence["datasource_index"].to_numpy()].to_numpy(bool)


# --------------------------------------------------------------------------- tables
def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Trial rows, then per method the mean and sample std over seeds (growth of |u|:
    geometric mean, when the trials carry ``u_growth``)."""
    if "u_growth" not in trials:
        trials = trials.assign(u_growth=np.nan)
    trials = trials.assign(row="trial", n_seeds=1)
    groups = trials.groupby("method", sort=False)
    count = groups.size().rename("n_seeds")
    mean = groups[list(METRIC_COLUMNS) + ["n_train", "n_flipped"]].mean()
    mean["u_growth"] = groups["u_growth"].apply(_geomean)
    std = groups[list(METRIC_COLUMNS)].std(ddof=1)
    mean = mean.join(count).reset_index().assign(row="mean")
    std = std.join(count).reset_index().assign(row="std")
    table = pd.concat([trials, mean, std], ignore_index=True)
    for c in ("seed", "n_train", "n_flipped"):
        table[c] = table[c].round().astype("Int64")
    return table[list(DETECTION_COLUMNS)]


MEAN_ROW = "mean of trials"


def flipped_by_sample(out, seeds=None) -> pd.Series | None:
    """sample id -> flipped, over every trial's ``label_noise.csv`` (the ids of
    :func:`artifacts.sample_ids`, matched through that trial's influence file); None when
    a trial flips a sample another trial scores unflipped (flips drawn per trial) or
    without label_noise.csv or influence files."""
    marks = []
    seen: set[int] = set()
    for _method, seed, path in influence_files(out, None, seeds):
        if seed in seen:
            continue
        seen.add(seed)
        noise = read_flipped(out, seed)
        if noise is None:
            return None
        infl = pd.read_csv(path)
        flags = flipped_of(infl, noise, str(path))
        marks.append(pd.DataFrame({"id": artifacts.sample_ids(out, seed, infl), "flipped": flags}))
    if not marks:
        return None
    both = pd.concat(marks, ignore_index=True)
    per_id = both.groupby("id")["flipped"]
    if (per_id.nunique() > 1).any():
        return None
    return per_id.first()


def mean_rows(out, means: dict, seeds=None) -> pd.DataFrame:
    """The ``mean of trials`` rows of the rankings ``means`` (method -> (ranking, seeds),
    as ranking.write_mean_rankings returns them); none (logged) when the flips differ
    between trials."""
    rows = []
    flags = flipped_by_sample(out, seeds) if means else None
    if means and flags is None:
        logger.info("%s: the flipped labels differ between trials (flips drawn per trial, as before "
                    "--label-noise-seed) or a trial has no label_noise.csv: no '%s' row", out, MEAN_ROW)
    for method, (table, used) in means.items() if flags is not None else ():
        ids = table["datasource_index"]
        if not ids.isin(flags.index).all():
            continue
        f = flags.loc[ids.to_numpy()].to_numpy(bool)
        rows.append({"row": MEAN_ROW, "method": method, "seed": pd.NA, "n_seeds": len(used),
                     "n_train": len(table), "n_flipped": int(f.sum()),
                     **ranking_metrics(table["influence"].to_numpy(), f), "u_growth": np.nan})
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def _geomean(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.exp(np.log(v).mean())) if len(v) and (v > 0).all() else float("nan")


def format_table(table: pd.DataFrame, title: str | None = None) -> str:
    """Mean (± std over seeds) of recall@k and AUC, one line a method, as text; the last
    column is the growth of |u| over the walk (geometric mean over seeds)."""
    mean = table[table["row"] == "mean"].set_index("method")
    std = table[table["row"] == "std"].set_index("method")
    head = ["method"] + [f"recall@{k}%" for k in PERCENTS] + ["AUC", "seeds", "|u| growth"]
    body = []
    for m in mean.index:
        cells = [m]
        for c in METRIC_COLUMNS:
            mu = mean.loc[m, c]
            sd = std.loc[m, c] if m in std.index else float("nan")
            cells.append(f"{mu:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}"))
        cells.append(str(int(mean.loc[m, "n_seeds"])))
        g = mean.loc[m, "u_growth"] if "u_growth" in mean else float("nan")
        cells.append("-" if pd.isna(g) else f"x{g:.3g}")
        body.append(cells)
    for _i, r in table[table["row"] == MEAN_ROW].iterrows():  # one ranking: no ± over seeds
        cells = [f"{r['method']} ({MEAN_ROW})"] + [f"{r[c]:.3f}" for c in METRIC_COLUMNS]
        body.append(cells + [str(int(r["n_seeds"])), "-"])
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if title:
        lines.insert(0, title)
    return "\n".join(lines)


# --------------------------------------------------------------------------- phase
def detection_results(out, methods=None, seeds=None):
    """(trial rows, curves by method, noise share) of every influence file with noise info."""
    out = Path(out)
    rows, curves, shares = [], {}, []
    noise_by_seed: dict[int, pd.DataFrame | None] = {}
    for method, seed, path in influence_files(out, methods, seeds):
        if seed not in noise_by_seed:
            noise_by_seed[seed] = read_flipped(out, seed)
            if noise_by_seed[seed] is None:
                logger.warning("seed %d: %s not found, no detection metrics for this seed",
                               seed, paths.label_noise(out, seed))
        noise = noise_by_seed[seed]
        if noise is None:
            continue
        infl = pd.read_csv(path)
        flags = flipped_of(infl, noise, str(path))
        rows.append({"method": method, "seed": seed, "n_train": len(infl), "n_flipped": int(flags.sum()),
                     **ranking_metrics(infl["influence"].to_numpy(), flags),
                     "u_growth": read_u_growth(out, method, seed)})
        curves.setdefault(method, []).append(detection_curve(infl["influence"].to_numpy(), flags))
        shares.append(flags.mean())
    trials = pd.DataFrame(rows, columns=["method", "seed", "n_train", "n_flipped", *METRIC_COLUMNS,
                                         "u_growth"])
    return trials, curves, float(np.mean(shares)) if shares else 0.0


@dataclass(frozen=True)
class Detection:
    """The detection table (as written), the curves by method and the share flipped."""

    table: pd.DataFrame
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    noise_share: float


def analyze_detection(out, methods=None, seeds=None, means: dict | None = None) -> Detection | None:
    """Write ``summary/detection.csv``; None without label noise.

    ``methods``/``seeds`` restrict the influence files used (default: all found). A run
    without label noise (saved configuration with ``label_noise`` 0, or no
    ``label_noise.csv``) is left alone. ``means``: the rankings averaged over trials, as
    ranking.write_mean_rankings returns them (default: averaged here, not written).
    """
    out = Path(out)
    cfg = _saved_config(out)
    if cfg is not None and not cfg.label_noise > 0:
        return None
    if not any(out.glob(paths.train_glob(paths.label_noise(out, 0).name))):
        if cfg is not None:
            logger.warning("%s: --label-noise %g but no %s; no detection metrics", out,
                           cfg.label_noise, paths.train_glob(paths.label_noise(out, 0).name))
        return None
    seeds = None if seeds is None else [int(s) for s in seeds]
    trials, curves, share = detection_results(out, methods, seeds)
    if trials.empty:
        logger.warning("%s: label noise but no influence files to score", out)
        return None
    if means is None:
        means = {}
        for method in dict.fromkeys(trials["method"]):
            found = ranking.mean_ranking(out, method, seeds)
            if found is not None:
                means[method] = found
    means = {m: v for m, v in means.items() if m in set(trials["method"])}
    table = summarize(trials)
    extra = mean_rows(out, means, seeds)
    if len(extra):
        table = pd.concat([table, extra.astype(table.dtypes.to_dict())], ignore_index=True)
    fileio.write_csv(paths.detection(out), table)
    logger.info("wrote %s", paths.detection(out))
    return Detection(table, curves, share)
