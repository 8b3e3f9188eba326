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

Written under the output folder:

* ``summary/detection.csv``: one ``row = trial`` line per (method, seed), then per
  method the mean (``row = mean``) and sample standard deviation (``row = std``) over
  seeds;
* ``fig/detection.png``: fraction of the flipped samples found against the fraction of
  the data inspected, one line a method (mean over seeds), chance (the diagonal) and
  the best possible ranking as references.

:func:`worst_samples_figure` draws, for every run, the most harmful and most helpful
training images of each method with their given label and score
(``fig/worst_samples.png``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from . import config as C
from . import fileio, paths

logger = logging.getLogger(__name__)

PERCENTS = (1, 5, 10, 20)
RECALL_COLUMNS = tuple(f"recall_at_{k}pct" for k in PERCENTS)
METRIC_COLUMNS = RECALL_COLUMNS + ("auc",)
DETECTION_COLUMNS = ("row", "method", "seed", "n_seeds", "n_train", "n_flipped") + METRIC_COLUMNS
CURVE_POINTS = 501
COLORS = {"Hara": "tab:blue", "Ours": "tab:red", "Random": "tab:green", "cleanlab": "tab:purple"}


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


def _influence_files(out, methods=None, seeds=None) -> list[tuple[str, int, Path]]:
    found = []
    for p in Path(out).glob("influence/*/influence_*.csv"):
        method = p.parent.name
        try:
            seed = int(p.stem.split("_", 1)[1])
        except ValueError:
            continue
        if methods is not None and method not in methods:
            continue
        if seeds is not None and seed not in seeds:
            continue
        found.append((method, seed, p))
    key = {m: i for i, m in enumerate(C.METHODS)}
    return sorted(found, key=lambda t: (key.get(t[0], len(key)), t[0], t[1]))


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
    """Trial rows, then per method the mean and sample std over seeds."""
    trials = trials.assign(row="trial", n_seeds=1)
    groups = trials.groupby("method", sort=False)
    count = groups.size().rename("n_seeds")
    mean = groups[list(METRIC_COLUMNS) + ["n_train", "n_flipped"]].mean()
    std = groups[list(METRIC_COLUMNS)].std(ddof=1)
    mean = mean.join(count).reset_index().assign(row="mean")
    std = std.join(count).reset_index().assign(row="std")
    table = pd.concat([trials, mean, std], ignore_index=True)
    for c in ("seed", "n_train", "n_flipped"):
        table[c] = table[c].round().astype("Int64")
    return table[list(DETECTION_COLUMNS)]


def format_table(table: pd.DataFrame, title: str | None = None) -> str:
    """Mean (± std over seeds) of recall@k and AUC, one line a method, as text."""
    mean = table[table["row"] == "mean"].set_index("method")
    std = table[table["row"] == "std"].set_index("method")
    head = ["method"] + [f"recall@{k}%" for k in PERCENTS] + ["AUC", "seeds"]
    body = []
    for m in mean.index:
        cells = [m]
        for c in METRIC_COLUMNS:
            mu = mean.loc[m, c]
            sd = std.loc[m, c] if m in std.index else float("nan")
            cells.append(f"{mu:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}"))
        cells.append(str(int(mean.loc[m, "n_seeds"])))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if title:
        lines.insert(0, title)
    return "\n".join(lines)


# --------------------------------------------------------------------------- figure
def plot_detection(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], noise_share: float,
                   path, title: str | None = None) -> None:
    """Fraction of flipped samples found vs fraction inspected, mean over seeds per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    try:
        grid = np.linspace(0.0, 1.0, CURVE_POINTS)
        ax.plot(grid, grid, ls="--", color="0.45", lw=1.0, label="chance (diagonal)")
        if noise_share > 0:
            ax.plot(grid, np.minimum(1.0, grid / noise_share), ls=":", color="0.2", lw=1.0,
                    label="best possible")
        for method, runs in curves.items():
            ys = np.stack([np.interp(grid, x, y) for x, y in runs])
            ax.plot(grid, ys.mean(axis=0), lw=1.6, color=COLORS.get(method),
                    label=f"{method} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        for k in PERCENTS:
            ax.axvline(k / 100, color="0.85", lw=0.8, zorder=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("fraction of training data inspected (most harmful first)")
        ax.set_ylabel("fraction of flipped labels found")
        ax.set_title(title or f"Finding flipped labels ({noise_share:.0%} of training labels flipped)",
                     fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        with fileio.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- phase
def detection_results(out, methods=None, seeds=None):
    """(trial rows, curves by method, noise share) of every influence file with noise info."""
    out = Path(out)
    rows, curves, shares = [], {}, []
    noise_by_seed: dict[int, pd.DataFrame | None] = {}
    for method, seed, path in _influence_files(out, methods, seeds):
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
                     **ranking_metrics(infl["influence"].to_numpy(), flags)})
        curves.setdefault(method, []).append(detection_curve(infl["influence"].to_numpy(), flags))
        shares.append(flags.mean())
    trials = pd.DataFrame(rows, columns=["method", "seed", "n_train", "n_flipped", *METRIC_COLUMNS])
    return trials, curves, float(np.mean(shares)) if shares else 0.0


def analyze_detection(out, methods=None, seeds=None, title: str | None = None) -> pd.DataFrame | None:
    """Write ``summary/detection.csv`` and ``fig/detection.png``; None without label noise.

    ``methods``/``seeds`` restrict the influence files used (default: all found). A run
    without label noise (saved configuration with ``label_noise`` 0, or no
    ``label_noise.csv``) is left alone.
    """
    out = Path(out)
    cfg = _saved_config(out)
    if cfg is not None and not cfg.label_noise > 0:
        return None
    if not any(Path(out).glob("train/seed_*/label_noise.csv")):
        if cfg is not None:
            logger.warning("%s: --label-noise %g but no train/seed_*/label_noise.csv; "
                           "no detection metrics", out, cfg.label_noise)
        return None
    seeds = None if seeds is None else [int(s) for s in seeds]
    trials, curves, share = detection_results(out, methods, seeds)
    if trials.empty:
        logger.warning("%s: label noise but no influence files to score", out)
        return None
    table = summarize(trials)
    fileio.write_csv(paths.detection(out), table)
    plot_detection(curves, share, paths.figure(out, "detection"), title)
    logger.info("wrote %s and %s", paths.detection(out), paths.figure(out, "detection"))
    return table


# --------------------------------------------------------------------------- images
def _tile(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """uint8 (C, H, W) -> an array imshow draws, and its colour map."""
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.transpose(img[:3], (1, 2, 0)), None


def worst_samples_figure(out, cfg: C.Config | None = None, seed: int = 0, k: int = 16,
                         data=None, methods=None) -> Path | None:
    """Grid of the k most harmful and k most helpful training images of each method.

    One block of rows per method and end of the ranking; each image is titled with its
    given label (and the true one when it was flipped, framed in red) and its influence.
    Pixels come from the data layer (``engine.load_prepared``), or ``data`` when given.
    Written to ``fig/worst_samples.png``; returns its path (None, with a warning, without
    influence files of that seed or without a configuration to load the images with).
    """
    from . import engine

    out = Path(out)
    cfg = cfg if cfg is not None else _saved_config(out)
    files = _influence_files(out, methods, [seed])
    if not files:
        logger.warning("seed %d: no influence files in %s, no worst-samples figure", seed, out)
        return None
    if data is None:
        if cfg is None:
            logger.warning("%s: no run configuration to load the images from; no worst-samples "
                           "figure", paths.run_config(out))
            return None
        data = engine.load_prepared(cfg, seed)
    pos = pd.Series(np.arange(data.n_train), index=np.asarray(data.train_rows))
    noisy = bool(np.any(data.flipped))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, int(k))
    ncols = min(k, 16)
    rows_per_block = math.ceil(k / ncols)
    blocks = [(m, end, p) for m, _s, p in files for end in ("harmful", "helpful")]
    nrows = len(blocks) * rows_per_block
    # fixed layout in inches (much faster than tight_layout over many axes)
    cell_w, img, title_h, block_gap, left, top, bottom = 0.92, 0.8, 0.34, 0.12, 1.15, 0.45, 0.1
    width = left + ncols * cell_w + 0.1
    height = top + nrows * (img + title_h) + len(blocks) * block_gap + bottom
    fig = plt.figure(figsize=(width, height))
    try:
        frames = {p: pd.read_csv(p) for _m, _s, p in files}
        y = height - top
        for method, end, path in blocks:
            df = frames[path]
            pick = df.head(k) if end == "harmful" else df.tail(k).iloc[::-1]
            y_block = y
            for j in range(min(k, len(pick))):
                if j and j % ncols == 0:
                    y -= img + title_h
                x0 = left + (j % ncols) * cell_w
                ax = fig.add_axes(((x0 + (cell_w - img) / 2) / width, (y - title_h - img) / height,
                                   img / width, img / height))
                ax.set_xticks([])
                ax.set_yticks([])
                r = pick.iloc[j]
                i = int(pos.loc[int(r["datasource_index"])])
                tile, cmap = _tile(data.train_x[i])
                ax.imshow(tile, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
                flipped = bool(data.flipped[i])
                label = f"y={int(data.train_y[i])}"
                if flipped:
                    label += f" (true {int(data.original_y[i])})"
                ax.set_title(f"{label}\n{r['influence']:.2e}", fontsize=6.5,
                             color="tab:red" if flipped else "black", pad=2)
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:red" if flipped else "0.6")
                    spine.set_linewidth(2.0 if flipped else 0.5)
            y -= img + title_h + block_gap
            fig.text(0.1 / width, (y_block - (y_block - y - block_gap) / 2) / height,
                     f"{method}\nmost {end}", fontsize=8, ha="left", va="center")
        head = f"Training samples by influence (seed {seed}): the {k} most harmful and most helpful"
        if noisy:
            head += "; red = label flipped by --label-noise (true label in brackets)"
        fig.text(0.5, 1 - 0.2 / height, head, fontsize=9, ha="center", va="center")
        target = paths.figure(out, "worst_samples")
        with fileio.atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    logger.info("wrote %s", target)
    return target
