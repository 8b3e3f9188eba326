"""Speed-up of --jobs 2 (a local Dask cluster of 2 worker processes) over --jobs 1
(in-process) on the demo preset's evaluation phase; optionally against another revision.

The training and influence phases of the demo preset are run once (or taken from a
finished demo folder, --from, by default output/demo when it holds one); then the
evaluation phase (every retrain: methods x n x seeds) runs on fresh copies, one after
the other: --jobs 1, --jobs 2, and with --baseline DIR (a checkout of another revision,
e.g. ``git archive <rev> | tar -x -C DIR``) that revision's --jobs 2 on the same work.
Each run is a fresh Python process timed around ``pipeline.run_pipeline`` (imports
excluded); the wall times, the ratios and whether every run gave byte-identical score
files are printed. ``--smoke`` times a much smaller evaluation instead (the demo preset at
the smallest sizes, Random only, see SMOKE, on the 100-digit CSV data set of
``_common.smoke_csv`` written to ``WORK/smoke_data``), in ``--work`` as well.

    python benchmarks/bench_jobs.py [--from output/demo] [--work output/bench_jobs] [--baseline DIR]
        [--smoke]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import smoke_csv  # noqa: E402

from sgd_influence import config as C  # noqa: E402
from sgd_influence import paths, pipeline, presets, store, view  # noqa: E402
from sgd_influence.cli import setup_logging  # noqa: E402
from sgd_influence.context import set_context  # noqa: E402

# --smoke: the demo preset with these settings (one seed, one epoch of a width-1 network,
# Random only, so that training and influence take seconds; two retrains per run) on a
# CSV data set of 100 digits
SMOKE = dict(n_trials=1, n_epochs=1, width=1, lr_decay_epochs=1, batch_size=8, methods=("Random",),
             remove_n_list=(0, 10), noise_floor_draws=0)


def demo_config(out: Path, jobs: int = 0, changes: dict | None = None) -> C.Config:
    return C.replace(C.Config(output=str(out), **presets.PRESETS["demo"], preset="demo"), jobs=jobs,
                     **(changes or {}))


def holds_demo(folder: Path, changes: dict | None = None) -> bool:
    """True when ``folder`` has finished training and influence files of the demo preset
    (with ``changes``)."""
    cfg = demo_config(folder, changes=changes)
    train = store.entry_dir(folder, "train", None, cfg.train_identity())
    infl = {m: store.entry_dir(folder, "influence", m, view.influence_identity(cfg, m)) for m in cfg.methods}
    return all((infl[m] / paths.influence(".", m, s).name).exists() and
               (train / paths.record(".", s).relative_to("train")).exists()
               for m in cfg.methods for s in range(cfg.n_trials))


# run in a fresh interpreter with the code of ``root``: the evaluation phase, timed
_TIMED = """
import json, logging, sys, time
sys.path.insert(0, {root!r})
from sgd_influence import config as C, pipeline, presets
from sgd_influence.cli import setup_logging
from sgd_influence.context import set_context
setup_logging({level})
set_context("cpu")
cfg = C.replace(C.Config(output={out!r}, **presets.PRESETS["demo"], preset="demo"), jobs={jobs}, **{changes!r})
t0 = time.perf_counter()
pipeline.run_pipeline(cfg, phases=("eval",))
print(json.dumps(time.perf_counter() - t0))
"""


def timed_eval(base: Path, target: Path, jobs: int, root: Path, level: int, changes: dict) -> float:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    # the training runs and influence files of the store (the evaluation links, or copies, them)
    for part in ("train", "influence"):
        shutil.copytree(base / "store" / part, target / "store" / part)
    code = _TIMED.format(root=str(root), out=str(target), jobs=jobs, level=level, changes=changes)
    res = subprocess.run([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, check=True)
    return float(json.loads(res.stdout.decode().strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default=str(ROOT / "output" / "demo"),
                    help="a finished demo folder to take training and influence from")
    ap.add_argument("--work", default=str(ROOT / "output" / "bench_jobs"), help="scratch folder")
    ap.add_argument("--baseline", default=None,
                    help="a checkout of another revision: its --jobs 2 is timed on the same work")
    ap.add_argument("--verbose", action="store_true", help="log every task")
    ap.add_argument("--smoke", action="store_true",
                    help="the demo preset at the smallest sizes (one seed, one epoch, width 1, Random "
                         "only, a CSV data set of 100 digits): checks that the script runs; its "
                         "numbers mean nothing")
    a = ap.parse_args()
    level = logging.INFO if a.verbose else logging.WARNING
    setup_logging(level)
    set_context("cpu")
    work = Path(a.work)
    changes = {}
    if a.smoke:
        train_csv, test_csv = smoke_csv(work / "smoke_data")
        changes = {**SMOKE, "dataset": "csv", "train_csv": str(train_csv), "test_csv": str(test_csv)}
    name = "the demo preset at the smoke sizes" if a.smoke else "the demo preset"
    base = Path(a.source)
    if not holds_demo(base, changes):
        base = work / ("base_smoke" if a.smoke else "base")
        print(f"no finished run of {name} in {a.source}: its training and influence in {base} "
              f"({'seconds' if a.smoke else 'a few minutes'}, once)", flush=True)
        jobs = 1 if a.smoke else 0  # the smoke run: no worker processes to start for seconds of work
        pipeline.run_pipeline(demo_config(base, jobs, changes), phases=("train", "infl"))
    cfg = demo_config(base, changes=changes)
    n_retrains = cfg.n_trials * (1 + len(cfg.methods) * (len([n for n in cfg.remove_n_list if n > 0])))
    print(f"evaluation phase of {name}: {n_retrains} retrains "
          f"({cfg.n_trials} seeds, methods {' '.join(cfg.methods)}, n {' '.join(map(str, cfg.remove_n_list))}); "
          f"{os.cpu_count()} cores", flush=True)
    runs = {"--jobs 1": (1, ROOT), "--jobs 2": (2, ROOT)}
    if a.baseline:
        runs["baseline --jobs 2"] = (2, Path(a.baseline).resolve())
    times = {}
    busy = False
    for name, (jobs, root) in runs.items():
        busy0, own0 = machine_cpu_seconds(), own_cpu_seconds()
        times[name] = timed_eval(base, work / name.replace(" ", "").replace("-", ""), jobs, root, level,
                                 changes)
        others = (machine_cpu_seconds() - busy0 - (own_cpu_seconds() - own0)) / times[name]
        busy |= others > 0.2
        print(f"{name:>18}: {times[name]:7.1f} s   (other processes used {max(others, 0):.2f} "
              "cores meanwhile)", flush=True)
    scores = [_scores(work / name.replace(" ", "").replace("-", "")) for name in runs]
    same = all(s == scores[0] for s in scores) and len(scores[0]) == n_retrains + cfg.n_trials * (
        len(cfg.methods) - 1)
    print(f"speed-up of --jobs 2 over --jobs 1: {times['--jobs 1'] / times['--jobs 2']:.2f}x")
    if a.baseline:
        print(f"--jobs 2 against the baseline's --jobs 2: {times['--jobs 2'] / times['baseline --jobs 2']:.3f} "
              "(time ratio; < 1 is faster)")
    print(f"score files identical in every run: {'yes' if same else 'NO'}")
    if busy:
        print("other work ran on the machine during the measurement: the ratio is not reliable")


def machine_cpu_seconds() -> float:
    """CPU time all cores spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished (joined) worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _scores(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob(paths.score_glob()))}


if __name__ == "__main__":
    main()
