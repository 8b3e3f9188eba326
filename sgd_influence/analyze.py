"""Analysis phase: summary table, figure and storage table of an output folder.

Reads ``score/{method}/score_delete_worst_{n}_seed_{seed}.csv`` and the training runs'
trajectories and writes

* ``summary/summary.csv``: the final-epoch score row of every (method, n, seed) with
  ``row = trial``, then per (method, n) the mean (``row = mean``) and the sample standard
  deviation over seeds (``row = std``, empty for a single seed); ``n_seeds`` counts them;
* ``fig/result.png``: test accuracy against the number of samples removed (symmetric-log
  x axis, so n = 0 is shown), mean and error bar (std) over seeds, one line a method,
  No Removal (n = 0) as a dashed horizontal reference line;
* ``summary/storage.csv``: the paper's storage table (:mod:`storage`): every step of
  every epoch, Hara's every-step cache, Ours' final parameters, Hara by replay (epoch
  snapshots) and the record, for the run's own data set (with its files' sizes) and for
  MNIST and CIFAR-10 at the paper's settings beside the paper's figures.

The accuracy table and the storage table are also printed. Run alone:
``python -m sgd_influence.analyze -o OUT`` (every score file found, or a selection).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import config as C
from . import fileio, paths

logger = logging.getLogger(__name__)

VALUES = ("val_loss", "val_acc", "test_loss", "test_acc")
SUMMARY_COLUMNS = ("row", "method", "n", "seed", "n_seeds", "epoch") + VALUES


def _method_key(m: str) -> int:
    return C.METHODS.index(m) if m in C.METHODS else len(C.METHODS)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Final-epoch trial rows, then mean and std rows per (method, n)."""
    last = scores.sort_values("epoch").groupby(["method", "n", "seed"], as_index=False).tail(1)
    last = last.assign(_m=last["method"].map(_method_key)).sort_values(["_m", "n", "seed"])
    trials = last.drop(columns="_m").assign(row="trial", n_seeds=1)
    groups = trials.groupby(["method", "n"], sort=False)
    mean = groups[list(VALUES) + ["epoch"]].mean().reset_index()
    std = groups[list(VALUES)].std(ddof=1).reset_index()
    count = groups.size().rename("n_seeds").reset_index()
    mean = mean.merge(count, on=["method", "n"]).assign(row="mean")
    std = std.merge(count, on=["method", "n"]).assign(row="std", epoch=mean["epoch"].to_numpy())
    table = pd.concat([trials, mean, std], ignore_index=True)
    table["seed"] = table["seed"].astype("Int64")
    table["epoch"] = table["epoch"].round().astype("Int64")
    return table[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def stats(summary: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """(method, n) -> mean, std, n_seeds of ``value``."""
    mean = summary[summary["row"] == "mean"].set_index(["method", "n"])
    std = summary[summary["row"] == "std"].set_index(["method", "n"])
    return pd.DataFrame({"mean": mean[value], "std": std[value], "n_seeds": mean["n_seeds"]})


def no_removal(summary: pd.DataFrame, value: str = "test_acc") -> tuple[float, float, int] | None:
    """Mean and std over seeds of the n = 0 runs (the same run for every method)."""
    base = summary[(summary["row"] == "trial") & (summary["n"] == 0)].drop_duplicates("seed")
    if base.empty:
        return None
    v = base[value].to_numpy(float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def accuracy_table(summary: pd.DataFrame) -> str:
    """Test accuracy (mean ± std over seeds) by n and method, as printed text."""
    st = stats(summary)
    methods = sorted({m for m, _ in st.index}, key=_method_key)
    ns = sorted({n for _, n in st.index})
    seeds = int(st["n_seeds"].max()) if len(st) else 0
    head = ["n removed"] + methods
    body = []
    for n in ns:
        cells = [("0 (No Removal)" if n == 0 else str(n))]
        for m in methods:
            if (m, n) in st.index:
                mu, sd = st.loc[(m, n), "mean"], st.loc[(m, n), "std"]
                cells.append(f"{mu:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}"))
            else:
                cells.append("-")
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = "  ".join
    rows = [line(c.rjust(w) for c, w in zip(r, widths)) for r in [head] + body]
    title = f"Test accuracy after retraining without the worst n samples (final epoch, {seeds} seed(s))"
    return "\n".join([title, rows[0], line("-" * w for w in widths)] + rows[1:])


# --------------------------------------------------------------------------- storage
def window_epochs_of(out) -> int:
    """The influence window of the folder's results (1, the paper's, when none saved)."""
    for path in (paths.influence_identity(out), paths.run_config(out)):
        if Path(path).exists():
            return int(fileio.read_json(path).get("infl_epochs", 1))
    return 1


def cache_table(out, seeds=None) -> pd.DataFrame:
    """The storage table (:mod:`storage`): the first finished seed's run, with its files'
    sizes, then MNIST and CIFAR-10 at the paper's settings."""
    from . import storage

    found = sorted(int(p.parent.name.split("_")[1]) for p in Path(out).glob("train/seed_*/record.npz"))
    found = [s for s in found if seeds is None or s in seeds]
    runs = []
    if found:
        seed, k = found[0], window_epochs_of(out)
        st = storage.run_setting(out, seed, k)
        first = 0 if st.window_epochs == 0 else st.n_epochs - st.window_epochs
        runs.append((st, storage.run_files(out, seed, first)))
    return storage.storage_table(runs)


def cache_line(df: pd.DataFrame) -> str:
    """The run's block of the storage table (or MNIST's at the paper's settings) as text."""
    from .storage import format_table

    first = df["setting"].iloc[0]
    return (f"Storage (disk; memory held by the influence walk; files on disk):\n"
            f"{format_table(df[df['setting'] == first])}\n"
            f"(all rows, MNIST and CIFAR-10 at the paper's settings beside the paper's figures: "
            f"summary/storage.csv)")


# --------------------------------------------------------------------------- figure
def plot(summary: pd.DataFrame, path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = stats(summary)
    methods = sorted({m for m, _ in st.index}, key=_method_key)
    colors = {"Hara": "tab:blue", "Ours": "tab:red", "Random": "tab:green"}
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    try:
        for k, m in enumerate(methods):
            s = st.loc[m].sort_index()
            x = s.index.to_numpy(float)
            # a small sideways shift per method keeps overlapping error bars apart
            # (multiplicative on the log part of the axis, additive around n = 0)
            shift = 0.07 * (k - (len(methods) - 1) / 2)
            x = np.where(x > 1, x * (1 + shift), x + shift)
            ax.errorbar(x, s["mean"].to_numpy(), yerr=s["std"].fillna(0).to_numpy(),
                        marker="o", ms=4, capsize=3, label=m, color=colors.get(m))
        base = no_removal(summary)
        if base is not None:
            mu, sd, _ = base
            ax.axhline(mu, ls="--", color="0.35", lw=1.2, label="No Removal")
            if not np.isnan(sd):
                ax.axhspan(mu - sd, mu + sd, color="0.5", alpha=0.12, lw=0)
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
        max_n = max((n for _, n in st.index), default=0)
        ax.set_xlim(-0.3, max(max_n, 1) * 1.6)
        ax.set_xlabel("number of samples removed (symmetric log scale; 0 = No Removal)")
        ax.set_ylabel("test accuracy")
        seeds = int(st["n_seeds"].max()) if len(st) else 0
        ax.set_title(title or f"Test accuracy vs samples removed ({seeds} seed(s))", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with fileio.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- phase
def analyze(out, methods=None, ns=None, seeds=None, title: str | None = None,
            show: bool = True) -> pd.DataFrame:
    """Write the summary, figure and storage table of ``out``; returns the summary.

    ``methods``, ``ns``, ``seeds`` restrict the score files used (default: all found).
    """
    from .eval import read_scores

    out = Path(out)
    scores = read_scores(out)
    if methods is not None:
        scores = scores[scores["method"].isin(list(methods))]
    if ns is not None:
        scores = scores[scores["n"].isin([int(n) for n in ns])]
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        scores = scores[scores["seed"].isin(seeds)]
    if scores.empty:
        raise FileNotFoundError(f"{paths.phase_root(out, 'score')}: no score files to analyse "
                                "(run the evaluation phase first)")
    summary = summarize(scores)
    fileio.write_csv(paths.summary(out), summary)
    plot(summary, paths.figure(out), title)
    cache = cache_table(out, seeds)
    fileio.write_csv(paths.storage_table(out), cache)
    logger.info("wrote %s, %s and %s", paths.summary(out), paths.figure(out), paths.storage_table(out))
    from .detection import analyze_detection, format_table, worst_samples_figure

    detection = analyze_detection(out, methods, seeds)  # None unless --label-noise
    worst_samples_figure(out, seed=seeds[0] if seeds else 0, methods=methods)
    if show:
        print(accuracy_table(summary))
        print(cache_line(cache))
        if detection is not None:
            print(format_table(detection, "Flipped labels found in the first k % of each ranking"))
    return summary


def main(argv=None) -> int:
    from .cli import setup_logging
    from .pipeline import OneLineParser

    p = OneLineParser(prog="python -m sgd_influence.analyze", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default=C.Config.output, help="output folder (default: output)")
    p.add_argument("--methods", nargs="+", choices=C.METHODS, default=None,
                   help="methods to include (default: all found)")
    p.add_argument("-r", "--remove_n_list", type=int, nargs="+", default=None,
                   help="numbers of removed samples to include (default: all found)")
    p.add_argument("--seed", type=int, nargs="+", default=None, help="seeds to include (default: all found)")
    ns = p.parse_args(argv)
    setup_logging()
    try:
        title = None
        if paths.run_config(ns.output).exists():
            from .pipeline import run_title

            title = run_title(C.Config.from_dict(fileio.read_json(paths.run_config(ns.output))))
        analyze(ns.output, ns.methods, ns.remove_n_list, ns.seed, title)
    except (ValueError, FileNotFoundError) as exc:
        logging.getLogger("sgd_influence").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
