"""Analysis phase: summary table, figure and cache-size table of an output folder.

Reads ``score/{method}/score_delete_worst_{n}_seed_{seed}.csv`` and
``train/seed_{s}/cache_size.json`` and writes

* ``summary/summary.csv``: the final-epoch score row of every (method, n, seed) with
  ``row = trial``, then per (method, n) the mean (``row = mean``) and the sample standard
  deviation over seeds (``row = std``, empty for a single seed); ``n_seeds`` counts them;
* ``fig/result.png``: test accuracy against the number of samples removed (symmetric-log
  x axis, so n = 0 is shown), mean and error bar (std) over seeds, one line a method,
  No Removal (n = 0) as a dashed horizontal reference line;
* ``summary/cache_size.csv``: per seed the bytes Ours keeps (the final parameters) and
  Hara keeps (the parameters of every step of the influence window) and their ratio.

The accuracy table and the cache sizes are also printed. Run alone:
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
CACHE_COLUMNS = ("seed", "window_steps", "ours_bytes", "hara_bytes", "ratio_hara_to_ours",
                 "ours_file_bytes", "hara_file_bytes")


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


# --------------------------------------------------------------------------- cache size
def cache_table(out, seeds=None) -> pd.DataFrame:
    files = sorted(Path(out).glob("train/seed_*/cache_size.json"),
                   key=lambda p: int(p.parent.name.split("_")[1]))
    rows = []
    for f in files:
        seed = int(f.parent.name.split("_")[1])
        if seeds is not None and seed not in seeds:
            continue
        r = fileio.read_json(f)
        rows.append({
            "seed": seed,
            "window_steps": r["window_steps"],
            "ours_bytes": r["last_weight_bytes"],
            "hara_bytes": r["every_step_bytes"],
            "ratio_hara_to_ours": r["ratio_every_step_to_last_weight"],
            "ours_file_bytes": r.get("final_snapshot_file_bytes"),
            "hara_file_bytes": r.get("every_step_file_bytes"),
        })
    df = pd.DataFrame(rows, columns=list(CACHE_COLUMNS))
    for c in ("ours_file_bytes", "hara_file_bytes"):
        df[c] = df[c].astype("Int64")
    return df


def _size(b: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.3f} {unit}"
    return f"{b:.0f} B"


def cache_line(df: pd.DataFrame) -> str:
    if df.empty:
        return "Cache size: no train/seed_*/cache_size.json found"
    r = {k: df[k].iloc[0] for k in df.columns}
    return (f"Cache size (seed {int(r['seed'])}): Ours keeps {_size(float(r['ours_bytes']))} "
            f"(final parameters), Hara {_size(float(r['hara_bytes']))} "
            f"(parameters before each of {int(r['window_steps'])} steps), "
            f"ratio 1/{float(r['ratio_hara_to_ours']):,.0f}")


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
    """Write the summary, figure and cache table of ``out``; returns the summary.

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
    fileio.write_csv(paths.cache_table(out), cache)
    logger.info("wrote %s, %s and %s", paths.summary(out), paths.figure(out), paths.cache_table(out))
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
