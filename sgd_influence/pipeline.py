"""A run of the pipeline on one output folder: folder checks, then plan and execution.

:func:`run_pipeline` runs the requested phases (train, infl, eval) for some seeds:
it points the output folder's view at the configuration's results in the store
(:mod:`~.view`), builds the :class:`~.plan.Plan`
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
from . import data, fileio, paths
from .analyze import analyze
from .engine import check_network
from .execute import execute
from .plan import PHASES, Plan

logger = logging.getLogger(__name__)


def run_pipeline(cfg: C.Config, phases=PHASES, seeds=None, scheduler: str | None = None,
                 per_sample: str = "auto") -> None:
    """Run the requested phases for ``seeds`` (default: every trial), reusing finished files.

    ``scheduler``: the address of a Dask scheduler to run the tasks on (default: this
    process for ``--jobs 1``, else a local cluster of ``--jobs`` worker processes).
    """
    seeds = list(range(cfg.n_trials)) if seeds is None else list(seeds)
    plan = Plan(cfg, phases, seeds, per_sample)  # checks the phase names; reads nothing yet
    plan.point_view()
    prepare_data(cfg, phases)
    report = execute(plan, cfg.n_jobs(), scheduler)
    if report.done:
        logger.info("%d task(s) finished in %.1f s on %d worker(s)", report.done, report.seconds,
                    report.workers)
    else:
        logger.info("nothing to do: every file of %s is already there", ", ".join(phases))


def prepare_data(cfg: C.Config, phases) -> None:
    """What every task of a built-in data set needs, once, in this process before any
    task runs: its download (and decoded cache) and, for the influence files' x:image,
    its PNG files. A failure is one line here instead of one per task."""
    if cfg.is_csv or not ({"train", "infl"} & set(phases)):
        return
    try:
        if cfg.dataset != "mnist5k":
            data.load_dataset(cfg.dataset, 0, cfg.data_dir)
        if "infl" in phases:
            data.ensure_images(cfg.dataset, cfg.data_dir)
    except data.DataError as exc:
        if cfg.data_dir:
            raise data.DataError(f"--data-dir {cfg.data_dir}: {exc}") from None
        raise


# --------------------------------------------------------------------------- whole run
def run_all(cfg: C.Config, scheduler: str | None = None) -> None:
    """Train, compute influence, retrain and analyse: the whole pipeline of one folder."""
    fed = check_network(cfg)
    _drop_other_analysis(cfg)
    # ``input``: what the network is fed (shape, size rule, normalisation, augmentation)
    fileio.write_json(paths.run_config(cfg.output), {**cfg.to_dict(), **({"input": fed} if fed else {})})
    run_pipeline(cfg, PHASES, scheduler=scheduler)
    analyze(cfg.output, methods=cfg.methods, ns=cfg.remove_n_list, seeds=range(cfg.n_trials),
            title=run_title(cfg))


def _drop_other_analysis(cfg: C.Config) -> None:
    """The tables and figures of another configuration's analysis are removed (they are
    made again from the store's files by this run's analysis)."""
    out = Path(cfg.output)
    try:
        saved = C.Config.from_dict(fileio.read_json(paths.run_config(out)))
    except (OSError, ValueError, TypeError):
        saved = None
    sections = ("data", "train", "influence", "eval")
    if saved is not None and saved.identity(*sections) == cfg.identity(*sections):
        return
    for phase in ("summary", "fig"):
        shutil.rmtree(paths.phase_root(out, phase), ignore_errors=True)


def run_title(cfg: C.Config) -> str:
    data = Path(cfg.train_csv).name if cfg.is_csv else cfg.dataset
    window = "all epochs" if cfg.infl_epochs == 0 else f"last {cfg.infl_epochs} epoch(s)"
    model = f"{cfg.model} (smooth)" if cfg.smooth_net() else cfg.model
    if cfg.model_nnp or cfg.model_onnx:
        model = Path(cfg.model_nnp or cfg.model_onnx).name
    return f"{data}, {model}, {cfg.n_epochs} epochs, window {window}"
