"""A run of the pipeline on one output folder: folder checks, then plan and execution.

:func:`run_pipeline` runs the requested phases (train, infl, eval) for some seeds:
it removes temporary files of killed processes, checks (or with ``--overwrite``
clears) the phase folders against the configuration, builds the :class:`~.plan.Plan`
and hands it to :func:`~.execute.execute` (in this process, on a local Dask cluster
or on ``--scheduler``). :func:`run_all` is the whole pipeline behind
``train_infl_eval.py``: it saves the run's configuration, runs every phase and
analyses the scores.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import config as C
from . import fileio, paths
from .analyze import analyze
from .eval import prepare_score_folder
from .execute import execute
from .plan import PHASES, Plan

logger = logging.getLogger(__name__)


def prepare_influence_folder(cfg: C.Config) -> None:
    """Refuse (or with --overwrite clear) influence files of another configuration."""
    out = Path(cfg.output)
    C.claim_folder(paths.influence_identity(out), paths.phase_root(out, "influence"),
                   cfg.infl_identity(), cfg.overwrite, "influence result")


def run_pipeline(cfg: C.Config, phases=PHASES, seeds=None, scheduler: str | None = None) -> None:
    """Run the requested phases for ``seeds`` (default: every trial), reusing finished files.

    ``scheduler``: the address of a Dask scheduler to run the tasks on (default: this
    process for ``--jobs 1``, else a local cluster of ``--jobs`` worker processes).
    """
    seeds = list(range(cfg.n_trials)) if seeds is None else list(seeds)
    plan = Plan(cfg, phases, seeds)  # checks the phase names; reads nothing yet
    out = Path(cfg.output)
    if "infl" in phases:
        prepare_influence_folder(cfg)
    elif "eval" in phases:
        if not C.check_saved(paths.influence_identity(out), cfg.infl_identity(), False, "influence result"):
            raise FileNotFoundError(f"{paths.influence_identity(out)}: no influence results "
                                    "(run the influence phase first)")
    if "eval" in phases:
        prepare_score_folder(cfg)
    report = execute(plan, cfg.n_jobs(), scheduler)
    if report.done:
        logger.info("%d task(s) finished in %.1f s on %d worker(s)", report.done, report.seconds,
                    report.workers)
    else:
        logger.info("nothing to do: every file of %s is already there", ", ".join(phases))


# --------------------------------------------------------------------------- whole run
def check_run_config(cfg: C.Config) -> None:
    """Refuse a folder holding another configuration (or clear it with --overwrite); save cfg.

    A folder whose earlier run made no result yet (it failed at the start, e.g. on bad
    data) is taken over without --overwrite.
    """
    out = Path(cfg.output)
    path = paths.run_config(out)
    if path.exists():
        saved = C.Config.from_dict(fileio.read_json(path))
        if saved.eval_identity() != cfg.eval_identity():
            old, new = saved.eval_identity(), cfg.eval_identity()
            details = C.describe_diff(old, new)
            results = _holds_results(out)
            if results and not cfg.overwrite:
                raise C.ConfigMismatch(
                    f"{out}: holds a run of a different configuration ({details}); "
                    "use another -o folder or --overwrite")
            wipe = ["score", "summary", "fig"]
            if saved.infl_identity() != cfg.infl_identity() or not results:
                wipe.append("influence")
            if saved.train_identity() != cfg.train_identity() or not results:
                wipe.append("train")
            if results:
                logger.warning("--overwrite: replacing the results of another configuration in %s "
                               "(%s)", out, details)
            for phase in wipe:
                if paths.phase_root(out, phase).exists():
                    shutil.rmtree(paths.phase_root(out, phase))
    fileio.write_json(path, cfg.to_dict())


def _holds_results(out: Path) -> bool:
    """True when a phase folder holds any file besides the saved configurations."""
    return any(f.is_file() and f.name != "config.json" and not f.name.startswith(".")
               for phase in ("train", "influence", "score")
               for f in paths.phase_root(out, phase).rglob("*"))


def run_all(cfg: C.Config, scheduler: str | None = None) -> None:
    """Train, compute influence, retrain and analyse: the whole pipeline of one folder."""
    check_run_config(cfg)
    run_pipeline(cfg, PHASES, scheduler=scheduler)
    analyze(cfg.output, methods=cfg.methods, ns=cfg.remove_n_list, seeds=range(cfg.n_trials),
            title=run_title(cfg))


def run_title(cfg: C.Config) -> str:
    data = Path(cfg.train_csv).name if cfg.is_csv else cfg.dataset
    window = "all epochs" if cfg.infl_epochs == 0 else f"last {cfg.infl_epochs} epoch(s)"
    model = f"{cfg.model} (smooth)" if cfg.smooth_net() else cfg.model
    return f"{data}, {model}, {cfg.n_epochs} epochs, window {window}"
