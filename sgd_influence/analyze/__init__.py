"""Analysis phase: summary table, paired tests, figure and storage table of an output folder.

Reads ``score/{method}/score_delete_worst_{n}_seed_{seed}.csv``, the noise-floor retrains
``score/noise_floor/score_draw_{d}_delete_random_{k}_seed_{seed}.csv``,
``influence/{method}/influence_{seed}.json`` (growth of |u|) and the training runs'
trajectories and writes

* ``summary/summary.csv`` in the reference code's layout: the columns val_loss,
  test_loss, val_accuracy, test_accuracy, method, seed, n_drops, mean, std first (then
  row, n_seeds, epoch, draw, u_growth). Rows (``row``):

  - ``trial``: the final-epoch scores of every (method, n_drops, seed); the n = 0 retrain
    is one row per seed labelled "No Removal" (it is the same run for every method);
  - ``mean`` / ``std`` per (method, n_drops): mean and sample standard deviation over
    seeds (``mean`` = "mean", ``std`` = "std" as in the reference; std empty for one seed);
  - the noise floor (method "Noise floor"): a ``trial`` row per retrain without k = n_drops
    random samples (``draw`` numbers the draws), then ``floor`` rows: per seed the sample
    standard deviation of the final metrics over that seed's floor retrains and its No
    Removal run, and (seed empty) the pooled floor sqrt(mean over seeds of the variance);
  - ``u_growth``: the factor by which |u| grew over the influence walk (Hara, Ours; the
    mean row holds the geometric mean over seeds).

* ``summary/paired_tests.csv``: for each method and n, its final test accuracy against
  Random at the same n (and against No Removal), paired by seed: mean and sd of the
  differences, paired t test and Wilcoxon signed-rank p values, and the noise floor of a
  mean difference, ``floor_diff`` = 2 sqrt(2 / S) sigma (sigma the pooled floor of test
  accuracy, S seeds): the difference two procedures that differ only by irrelevant
  changes would stay within about 95 % of the time. ``verdict`` is "better" or "worse"
  when p_t < 0.05 and |mean_diff| > floor_diff (without floor retrains: p_t alone), else
  "within noise" (one seed: no test; every seed the same difference: "no spread: no
  test", the t test cannot be computed);
* ``fig/result.png``: test accuracy against the number of samples removed (symmetric-log
  x axis, so n = 0 is shown), mean and error bar (std) over seeds, one line a method,
  No Removal as a dashed line with the noise-floor band around it; a star marks a point
  whose difference from Random is beyond the floor (figures.py);
* ``summary/storage.csv``: the paper's storage table (:mod:`storage`): every step of
  every epoch, Hara's every-step cache, Ours' final parameters, Hara by replay (epoch
  snapshots) and the record, for the run's own data set (with its files' sizes) and for
  MNIST and CIFAR-10 at the paper's settings beside the paper's figures.

* ``influence/{method}/influence_mean.csv``: each method's ranking averaged over the
  trials (:mod:`~sgd_influence.ranking`; it needs the influence files only, so it is
  written first, also when no score file exists yet); with ``--label-noise`` the
  detection table (:mod:`~sgd_influence.detection`) scores it too (``mean of trials``).

The accuracy table (``*`` = differs from Random beyond the floor), the floor, the growth
of |u| and the storage table are also printed. Run alone: ``python -m sgd_influence.analyze
-o OUT`` (every score file found, or a selection).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import fileio, paths, storage
from ..artifacts import (
    FLOOR_METHOD,
    VALUES,
    label_key,
    not_learned,
    read_floor,
    read_scores,
    read_u_growth,
    selected,
    shared_by_windows,
)
from ..detection import analyze_detection
from ..detection import format_table as detection_table
from ..figures import plot_detection, plot_result, worst_samples_figure
from ..ranking import write_mean_rankings
from ..storage import format_table as storage_table

logger = logging.getLogger(__name__)

NO_REMOVAL = "No Removal"
SUMMARY_COLUMNS = VALUES + ("method", "seed", "n_drops", "mean", "std", "row", "n_seeds", "epoch",
                            "draw", "u_growth")
PAIRED_COLUMNS = ("method", "baseline", "n_drops", "n_seeds", "mean_diff", "sd_diff", "t", "p_t",
                  "p_wilcoxon", "floor_sd", "floor_diff", "verdict")
ALPHA = 0.05
def _method_key(m: str) -> tuple:
    """Table order: No Removal, the methods in registration order (each one's kept windows
    after it, ``Hara`` then ``Hara@last1``), then the noise floor(s)."""
    base, tag = paths.split_variant(m)
    if base == NO_REMOVAL:
        return (0,)
    if base == FLOOR_METHOD:
        return (2, tag is not None, tag or "")
    return (1,) + label_key(m)


def _method_rank(labels: pd.Series) -> pd.Series:
    """Each label's position in table order (a sortable column)."""
    rank = {m: i for i, m in enumerate(sorted(set(labels), key=_method_key))}
    return labels.map(rank)


def _final(scores: pd.DataFrame, keys) -> pd.DataFrame:
    """The last epoch's row of every score file (``keys`` identify a file)."""
    return scores.sort_values("epoch", kind="mergesort").groupby(keys, as_index=False).tail(1)


def _geomean(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.exp(np.log(v).mean())) if len(v) and (v > 0).all() else float("nan")


def summarize(scores: pd.DataFrame, floor: pd.DataFrame | None = None,
              growth: dict[tuple[str, int], float] | None = None) -> pd.DataFrame:
    """The summary table (see the module docstring) from score rows and floor rows.

    ``growth`` maps (method, seed) to the growth factor of |u| (missing: empty)."""
    last = _final(scores, ["method", "n", "seed"])
    zero = last[last["n"] == 0]
    current = zero[[paths.split_variant(m)[1] is None for m in zero["method"]]]
    # the same run in every window (a replay ends at the trained model): the current one's
    base = (current if len(current) else zero).drop_duplicates("seed").assign(method=NO_REMOVAL)
    trials = pd.concat([base, last[last["n"] > 0]], ignore_index=True)
    trials = trials.assign(row="trial", n_seeds=1)
    growth = growth or {}
    trials["u_growth"] = [growth.get((m, int(s)), np.nan) for m, s in zip(trials["method"], trials["seed"])]
    trials = trials.assign(_m=_method_rank(trials["method"])).sort_values(["_m", "n", "seed"])
    trials = trials.drop(columns="_m")
    groups = trials.groupby(["method", "n"], sort=False)
    count = groups.size().rename("n_seeds")
    mean = groups[list(VALUES) + ["epoch"]].mean().join(count)
    mean["u_growth"] = groups["u_growth"].apply(_geomean)
    mean = mean.reset_index().assign(row="mean", mean="mean")
    std = groups[list(VALUES)].std(ddof=1).join(count).reset_index()
    std = std.assign(row="std", std="std", epoch=mean["epoch"].to_numpy())
    parts = [trials, mean, std]
    if floor is not None and len(floor):
        parts += _floor_rows(floor, base)
    table = pd.concat(parts, ignore_index=True).rename(columns={"n": "n_drops"})
    table = table.reindex(columns=list(SUMMARY_COLUMNS)).reset_index(drop=True)
    for c in ("seed", "epoch", "draw", "n_drops", "n_seeds"):
        table[c] = pd.to_numeric(table[c]).round().astype("Int64")
    return table


def _floor_rows(floor: pd.DataFrame, base: pd.DataFrame) -> list[pd.DataFrame]:
    """Trial rows of the floor retrains, the floor of each seed and the pooled floor; one
    floor per window (``Noise floor``, and ``Noise floor@last1`` for a kept window's)."""
    parts = []
    for label in sorted(set(floor["method"]), key=_method_key):
        runs = _final(floor[floor["method"] == label], ["n", "seed", "draw"])
        runs = runs.sort_values(["seed", "n", "draw"]).assign(row="trial", n_seeds=1)
        both = pd.concat([runs, base], ignore_index=True)  # No Removal: one more irrelevant variant
        per_seed = both.groupby("seed")[list(VALUES)].agg(lambda v: v.std(ddof=1)).reset_index()
        per_seed = per_seed.assign(method=label, row="floor", n_seeds=1)
        var = per_seed[list(VALUES)] ** 2
        pooled = pd.DataFrame([np.sqrt(var.mean(skipna=True))]).assign(
            method=label, row="floor", n_seeds=int(per_seed[list(VALUES)].notna().all(axis=1).sum()))
        parts += [runs, per_seed, pooled]
    return parts


def noise_floor(summary: pd.DataFrame, value: str = "test_accuracy", window: str | None = None) -> float:
    """The pooled noise floor (a standard deviation) of ``value``; NaN without floor rows.
    ``window``: a kept window's floor (its tag, ``last1``), else the current window's."""
    label = paths.variant(FLOOR_METHOD, window)
    f = summary[(summary["row"] == "floor") & summary["seed"].isna() & (summary["method"] == label)]
    return float(f[value].iloc[0]) if len(f) and pd.notna(f[value].iloc[0]) else float("nan")


def floor_band(summary: pd.DataFrame, n_seeds: int, value: str = "test_accuracy") -> float:
    """Half-width of the noise-floor band of a mean difference over ``n_seeds`` paired
    seeds: 2 sqrt(2 / S) sigma (NaN without floor or seeds)."""
    sigma = noise_floor(summary, value)
    return 2.0 * np.sqrt(2.0 / n_seeds) * sigma if n_seeds > 0 else float("nan")


def stats(summary: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """(method, n) -> mean, std, n_seeds of ``value``; No Removal under n = 0 of each method."""
    mean = summary[summary["row"] == "mean"]
    std = summary[summary["row"] == "std"]
    st = pd.DataFrame({"method": mean["method"].to_numpy(), "n": mean["n_drops"].to_numpy(),
                       "mean": mean[value].to_numpy(), "std": std[value].to_numpy(),
                       "n_seeds": mean["n_seeds"].to_numpy()})
    base = st[st["method"] == NO_REMOVAL]
    methods = [m for m in st["method"].unique() if m != NO_REMOVAL]
    rows = [base.assign(method=m, n=0) for m in methods] + [st[st["method"] != NO_REMOVAL]]
    st = pd.concat(rows, ignore_index=True) if methods else st
    st["n"] = st["n"].astype(int)
    st = st.assign(_m=_method_rank(st["method"])).sort_values(["_m", "n"], kind="mergesort")
    return st.drop(columns="_m").set_index(["method", "n"])


def no_removal(summary: pd.DataFrame, value: str = "test_accuracy") -> tuple[float, float, int] | None:
    """Mean and std over seeds of the n = 0 runs (the same run for every method)."""
    base = summary[(summary["row"] == "trial") & (summary["method"] == NO_REMOVAL)]
    if base.empty:
        return None
    v = base[value].to_numpy(float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def paired_test(diff: np.ndarray, floor_sd: float) -> dict:
    """Paired differences over seeds against zero, and against the noise floor."""
    from scipy.stats import ttest_rel, wilcoxon

    d = np.asarray(diff, np.float64)
    s = len(d)
    mean = float(d.mean()) if s else float("nan")
    sd = float(d.std(ddof=1)) if s > 1 else float("nan")
    t = p_t = p_w = float("nan")
    if s > 1:
        if sd > 1e-12 * max(abs(mean), 1e-12):
            res = ttest_rel(d, np.zeros(s))
            t, p_t = float(res.statistic), float(res.pvalue)
            p_w = float(wilcoxon(d).pvalue)
        # else every seed gives the same difference: no spread to test against, the test
        # cannot be computed (t and p stay undefined, never a star)
    floor_diff = 2.0 * np.sqrt(2.0 / s) * floor_sd if s else float("nan")  # as floor_band
    if s < 2:
        verdict = "one seed: no test"
    elif np.isnan(p_t):
        verdict = "no spread: no test"
    elif p_t < ALPHA and (np.isnan(floor_diff) or abs(mean) > floor_diff):
        verdict = "better" if mean > 0 else "worse"
    else:
        verdict = "within noise"
    return dict(n_seeds=s, mean_diff=mean, sd_diff=sd, t=t, p_t=p_t, p_wilcoxon=p_w,
                floor_sd=floor_sd, floor_diff=floor_diff, verdict=verdict)


def paired_tests(summary: pd.DataFrame, value: str = "test_accuracy",
                 shared: set[str] = frozenset()) -> pd.DataFrame:
    """Every method at every n > 0 against Random at that n and against No Removal; a
    kept window's results against Random and the noise floor of the same window, or the
    current ones where those are ``shared`` by every window (score folder names, see
    ``artifacts.shared_by_windows``)."""
    floors = summary["method"].map(lambda m: paths.split_variant(m)[0] == FLOOR_METHOD)
    trials = summary[(summary["row"] == "trial") & ~floors]
    acc = {(m, int(n)): g.set_index("seed")[value] for (m, n), g in trials.groupby(["method", "n_drops"])}
    rows = []
    for (m, n), a in sorted(acc.items(), key=lambda kv: (_method_key(kv[0][0]), kv[0][1])):
        if m == NO_REMOVAL:
            continue
        window = paths.split_variant(m)[1]
        floor_sd = noise_floor(summary, value, None if paths.FLOOR_FOLDER in shared else window)
        random = paths.variant("Random", None if "Random" in shared else window)
        for baseline, key in ((random, (random, n)), (NO_REMOVAL, (NO_REMOVAL, 0))):
            if m == baseline or key not in acc:
                continue
            b = acc[key]
            seeds = a.index.intersection(b.index)
            d = (a.loc[seeds] - b.loc[seeds]).to_numpy(float)
            rows.append({"method": m, "baseline": baseline, "n_drops": n, **paired_test(d, floor_sd)})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def beyond_floor(tests: pd.DataFrame, baseline: str = "Random") -> dict[tuple[str, int], str]:
    """(method, n) -> 'better' / 'worse' where the difference from ``baseline`` is real."""
    same = tests["baseline"].map(lambda b: paths.split_variant(b)[0] == baseline)
    sel = tests[same & tests["verdict"].isin(["better", "worse"])]
    return {(m, int(n)): v for m, n, v in zip(sel["method"], sel["n_drops"], sel["verdict"])}


def accuracy_table(summary: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    """Test accuracy (mean ± std over seeds) by n and method, as printed text.

    A cell marked ``*`` differs from Random at the same n beyond the noise floor."""
    st = stats(summary)
    real = beyond_floor(tests) if tests is not None else {}
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
                mark = " *" if (m, n) in real else "  "
                cells.append(f"{mu:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}") + mark)
            else:
                cells.append("-")
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = "  ".join
    rows = [line(c.rjust(w) for c, w in zip(r, widths)) for r in [head] + body]
    title = f"Test accuracy after retraining without the worst n samples (final epoch, {seeds} seed(s))"
    text = [title, rows[0], line("-" * w for w in widths)] + rows[1:]
    floor = noise_floor(summary)
    if not np.isnan(floor):
        runs = summary[(summary["row"] == "trial") & (summary["method"] == FLOOR_METHOD)]
        ks = " ".join(str(int(k)) for k in sorted(runs["n_drops"].dropna().unique()))
        text.append(f"Noise floor: test accuracy sd {floor:.4f} within a seed (retrains without k = {ks} "
                    f"random samples and No Removal); * = differs from Random by more than the floor "
                    f"(paired over seeds, p < {ALPHA}; summary/paired_tests.csv)")
    if tests is not None and len(tests):
        flat = tests[(tests["verdict"] == "no spread: no test") & (tests["baseline"] != NO_REMOVAL)]
        if len(flat):
            text.append("No test (every seed differs from Random by the same amount, no spread to "
                        "test against): " + ", ".join(f"{m} at n = {int(n)}" for m, n in
                                                        zip(flat["method"], flat["n_drops"])))
    kept = sorted({paths.split_variant(m)[1] for m in summary["method"]
                   if paths.split_variant(m)[0] == FLOOR_METHOD} - {None})
    floors = [(w, noise_floor(summary, window=w)) for w in kept]
    if any(not np.isnan(f) for _w, f in floors):  # each kept window is tested against its own
        text.append("Kept windows' noise floors: " + ", ".join(
            f"{w} sd {f:.4f}" for w, f in floors if not np.isnan(f)))
    return "\n".join(text)


def growth_line(summary: pd.DataFrame) -> str | None:
    """Growth of |u| over the walk per method (geometric mean over seeds), as text."""
    mean = summary[(summary["row"] == "mean") & summary["u_growth"].notna()]
    if mean.empty:
        return None
    per = mean.groupby("method", sort=False)["u_growth"].first()
    parts = [f"{m} x{g:.3g}" for m, g in per.items()]
    return "Growth of |u| over the influence walk (geometric mean over seeds): " + ", ".join(parts)


def growth_by_seed(out, methods, seeds) -> dict[tuple[str, int], float]:
    """(method, seed) -> growth factor of |u| read beside the influence files."""
    found = {}
    for m in methods:
        for s in seeds:
            g = read_u_growth(out, m, int(s))
            if not np.isnan(g):
                found[(m, int(s))] = g
    return found


# --------------------------------------------------------------------------- storage
def window_epochs_of(out) -> int:
    """The influence window of the folder's results (1, the paper's, when none saved)."""
    for path in (paths.run_config(out), *sorted(Path(out).glob("influence/*/config.json"))):
        saved = fileio.read_json(path) if Path(path).exists() else {}
        if saved.get("infl_epochs") is not None:
            return int(saved["infl_epochs"])
    return 1


def cache_table(out, seeds=None) -> pd.DataFrame:
    """The storage table (:mod:`storage`): the first finished seed's run, with its files'
    sizes, then MNIST and CIFAR-10 at the paper's settings."""

    found = sorted(paths.seed_of_train_file(p) for p in Path(out).glob(paths.train_glob("record.npz")))
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
    first = df["setting"].iloc[0]
    return (f"Storage (disk; memory held by the influence walk; files on disk):\n"
            f"{storage_table(df[df['setting'] == first])}\n"
            f"(all rows, MNIST and CIFAR-10 at the paper's settings beside the paper's figures: "
            f"summary/storage.csv)")


# --------------------------------------------------------------------------- phase
def analyze(out, methods=None, ns=None, seeds=None, title: str | None = None,
            show: bool = True) -> pd.DataFrame:
    """Write the averaged rankings, summary, paired tests, figures and storage table of
    ``out``; returns the summary.

    ``methods``, ``ns``, ``seeds`` restrict the score files used (default: all found); the
    noise floor uses every floor retrain of the selected seeds; ``methods`` and ``seeds``
    also choose the influence files averaged.
    """

    out = Path(out)
    seeds = None if seeds is None else [int(s) for s in seeds]
    means = write_mean_rankings(out, methods, seeds)
    scores = read_scores(out)
    floor = read_floor(out)
    if methods is not None:
        scores = scores[[selected(m, methods) for m in scores["method"]]]
    if ns is not None:
        scores = scores[scores["n"].isin([int(n) for n in ns])]
    if seeds is not None:
        scores = scores[scores["seed"].isin(seeds)]
        floor = floor[floor["seed"].isin(seeds)]
    if scores.empty:
        raise FileNotFoundError(f"{paths.phase_root(out, 'score')}: no score files to analyse "
                                "(run the evaluation phase first)")
    growth = growth_by_seed(out, sorted(set(scores["method"])), sorted(set(scores["seed"])))
    summary = summarize(scores, floor, growth)
    fileio.write_csv(paths.summary(out), summary)
    tests = paired_tests(summary, shared=shared_by_windows(out))
    fileio.write_csv(paths.paired_tests(out), tests)
    st = stats(summary)
    base = no_removal(summary)
    seeds_used = int(st["n_seeds"].max()) if len(st) else 0
    plot_result(st, None if base is None else base[0], floor_band(summary, seeds_used),
                beyond_floor(tests), paths.figure(out), title)
    cache = cache_table(out, seeds)
    fileio.write_csv(paths.storage_table(out), cache)
    logger.info("wrote %s, %s, %s and %s", paths.summary(out), paths.paired_tests(out),
                paths.figure(out), paths.storage_table(out))
    detection = analyze_detection(out, methods, seeds, means)  # None unless --label-noise
    if detection is not None:
        plot_detection(detection.curves, detection.noise_share, paths.figure(out, "detection"))
    worst_samples_figure(out, seed=seeds[0] if seeds else 0, methods=methods)
    untrained = not_learned(out, seeds)
    for line in untrained:  # said again beside the tables: a warning, not a refusal
        logger.warning(line)
    if show:
        print(accuracy_table(summary, tests))
        for line in untrained:
            print(f"WARNING: {line}")
        growth_text = growth_line(summary)
        if growth_text:
            print(growth_text)
        print(cache_line(cache))
        if detection is not None:
            print(detection_table(detection.table, "Flipped labels found in the first k % of each ranking"))
    return summary
