"""Every figure of the analysis: results, label-noise detection, worst samples.

* :func:`plot_result`: ``fig/result.png``, test accuracy against the number of samples
  removed, one line a method, No Removal and its noise-floor band, stars where a
  method differs from Random beyond the floor;
* :func:`plot_detection`: ``fig/detection.png``, fraction of flipped labels found
  against the fraction of the data inspected;
* :func:`worst_samples_figure`: ``fig/worst_samples.png``, the most harmful and most
  helpful training images of each method, read from the files the influence file's
  ``x:image`` names (no data set is loaded).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import fileio, paths, registry
from .detection import CURVE_POINTS, PERCENTS, influence_files, read_flipped

logger = logging.getLogger(__name__)

PEER_COLORS = {"cleanlab": "tab:purple"}  # label-noise peers that are not influence methods


def _color(method: str, default=None):
    """A method's colour (a kept window's results, ``Hara@last1``, share the method's)."""
    method = paths.split_variant(method)[0]
    if method in registry.methods:
        return getattr(registry.methods.get(method), "color", default)
    return PEER_COLORS.get(method, default)


def _style(method: str) -> str:
    """Solid for the current window's results, dashed for a kept window's."""
    return "-" if paths.split_variant(method)[1] is None else "--"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: int = 120) -> None:
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


# --------------------------------------------------------------------------- results
def plot_result(st: pd.DataFrame, no_removal: float | None, floor_band: float,
                real: dict[tuple[str, int], str], path, title: str | None = None) -> None:
    """Test accuracy vs samples removed, the noise-floor band and the real differences.

    ``st``: (method, n) -> mean, std, n_seeds (analyze.stats); ``no_removal``: mean test
    accuracy of No Removal; ``floor_band``: half-width of the band drawn around it (NaN:
    none); ``real``: the (method, n) whose difference from Random is beyond the floor.
    """
    plt = _pyplot()
    methods = list(dict.fromkeys(m for m, _ in st.index))
    seeds = int(st["n_seeds"].max()) if len(st) else 0
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    try:
        if no_removal is not None:
            ax.axhline(no_removal, ls="--", color="0.35", lw=1.2, label="No Removal")
            if not np.isnan(floor_band):
                ax.axhspan(no_removal - floor_band, no_removal + floor_band, color="0.5", alpha=0.18,
                           lw=0, label=f"noise floor (No Removal ± {floor_band:.4f})")
        marked = False
        for k, m in enumerate(methods):
            s = st.loc[m].sort_index()
            x = s.index.to_numpy(float)
            # a small sideways shift per method keeps overlapping error bars apart
            # (multiplicative on the log part of the axis, additive around n = 0)
            shift = 0.07 * (k - (len(methods) - 1) / 2)
            x = np.where(x > 1, x * (1 + shift), x + shift)
            y = s["mean"].to_numpy()
            ax.errorbar(x, y, yerr=s["std"].fillna(0).to_numpy(), marker="o", ms=4, capsize=3,
                        label=m, color=_color(m), ls=_style(m))
            hit = np.array([(m, int(n)) in real for n in s.index])
            if hit.any():
                marked = True
                ax.plot(x[hit], y[hit], ls="none", marker="*", ms=13, mfc="none",
                        mec=_color(m, "black"), mew=1.4)
        if marked:
            ax.plot([], [], ls="none", marker="*", ms=11, mfc="none", mec="black",
                    label="differs from Random beyond the floor")
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
        max_n = max((n for _, n in st.index), default=0)
        ax.set_xlim(-0.3, max(max_n, 1) * 1.6)
        ax.set_xlabel("number of samples removed (symmetric log scale; 0 = No Removal)")
        ax.set_ylabel("test accuracy")
        ax.set_title(title or f"Test accuracy vs samples removed ({seeds} seed(s))", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- detection
def plot_detection(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], noise_share: float,
                   path, title: str | None = None) -> None:
    """Fraction of flipped samples found vs fraction inspected, mean over seeds per method."""

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    try:
        grid = np.linspace(0.0, 1.0, CURVE_POINTS)
        ax.plot(grid, grid, ls="--", color="0.45", lw=1.0, label="chance (diagonal)")
        if noise_share > 0:
            ax.plot(grid, np.minimum(1.0, grid / noise_share), ls=":", color="0.2", lw=1.0,
                    label="best possible")
        for method, runs in curves.items():
            ys = np.stack([np.interp(grid, x, y) for x, y in runs])
            ax.plot(grid, ys.mean(axis=0), lw=1.6, color=_color(method), ls=_style(method),
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
        _save(fig, path)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- images
def read_image(path) -> np.ndarray | None:
    """An image file as uint8 (H, W) or (H, W, 3) for imshow; None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im if im.mode in ("L", "RGB") else im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        logger.debug("cannot read %s: %s", path, exc)
        return None


def worst_samples_figure(out, seed: int = 0, k: int = 16, methods=None) -> Path | None:
    """Grid of the k most harmful and k most helpful training images of each method.

    One block of rows per method and end of the ranking; each image is titled with its
    given label (and the true one when it was flipped, framed in red) and its influence.
    Pixels come from the files the influence file's ``x:image`` names (a missing file is
    drawn as an empty tile). Written to ``fig/worst_samples.png``; returns its path
    (None, with a warning, without influence files of that seed).
    """

    out = Path(out)
    files = influence_files(out, methods, [seed])
    if not files:
        logger.warning("seed %d: no influence files in %s, no worst-samples figure", seed, out)
        return None
    noise = read_flipped(out, seed)
    flips = {} if noise is None else {
        int(r): int(o) for r, o, f in zip(noise["datasource_index"], noise["original_label"],
                                          noise["flipped"]) if f}

    plt = _pyplot()
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
    missing = 0
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
                pixels = read_image(r["x:image"])
                if pixels is None:
                    missing += 1
                else:
                    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
                              interpolation="nearest")
                true = flips.get(int(r["datasource_index"]))
                label = f"y={int(r['y:label'])}" + ("" if true is None else f" (true {true})")
                ax.set_title(f"{label}\n{r['influence']:.2e}", fontsize=6.5,
                             color="black" if true is None else "tab:red", pad=2)
                for spine in ax.spines.values():
                    spine.set_edgecolor("0.6" if true is None else "tab:red")
                    spine.set_linewidth(0.5 if true is None else 2.0)
            y -= img + title_h + block_gap
            fig.text(0.1 / width, (y_block - (y_block - y - block_gap) / 2) / height,
                     f"{method}\nmost {end}", fontsize=8, ha="left", va="center")
        head = f"Training samples by influence (seed {seed}): the {k} most harmful and most helpful"
        if flips:
            head += "; red = label flipped by --label-noise (true label in brackets)"
        fig.text(0.5, 1 - 0.2 / height, head, fontsize=9, ha="center", va="center")
        target = paths.figure(out, "worst_samples")
        _save(fig, target, dpi=110)
    finally:
        plt.close(fig)
    if missing:
        logger.warning("%s: %d image file(s) named by x:image could not be read (empty tiles)",
                       target, missing)
    logger.info("wrote %s", target)
    return target
