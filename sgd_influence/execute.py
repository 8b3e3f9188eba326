"""Execution of a plan: in this process (``--jobs 1``) or on Dask distributed.

* ``--jobs 1`` (without ``--scheduler``): the tasks run here, one after the other,
  training first, then the seed whose data this process holds.
* ``--jobs N``: a local Dask cluster (``distributed.LocalCluster``) of N single-threaded
  worker processes; nnabla computes on one core per process.
* ``--scheduler ADDRESS``: the same graph on an existing Dask cluster; the output
  folder must be on a file system every worker sees.

Every worker process sets its nnabla context once and keeps the prepared data of the
seed it worked on last (:mod:`sgd_influence.worker`); a retrain waits for (and, when it
can, runs where) its influence file was made. Every task writes its files atomically and reuses finished
ones, so the files depend neither on where tasks ran nor on interruptions.

A task that fails stops the run: the other tasks are cancelled, finished files stay,
and the error is one line (:mod:`sgd_influence.failures`: errors in the input keep their
own exception and message; anything else becomes ``TaskFailed`` "<task> failed:
<error>"). A worker process that dies while running a task is replaced by Dask and the
task runs again (a few times at most; then it fails like any task).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from .bars import progress_bar
from .failures import TaskFailed, as_interrupt, failure, one_line
from .plan import Plan, Step, Task
from .worker import WorkerSetup, perform, run_task

logger = logging.getLogger(__name__)

PLUGIN_NAME = "sgd-influence"


# --------------------------------------------------------------------------- the run
@dataclass
class Report:
    done: int = 0
    workers: int = 1
    seconds: float = 0.0


def execute(plan: Plan, jobs: int = 1, scheduler: str | None = None) -> Report:
    """Run every task of ``plan`` (and the tasks their completion releases)."""
    t0 = time.perf_counter()
    steps = plan.initial()
    report = Report()
    if steps:
        bar = progress_bar(total=len(steps), desc="tasks", unit="task", mininterval=1.0, leave=False,
                           shown=logger.isEnabledFor(logging.INFO))
        # log lines printed above the bar, not through it
        redirect = contextlib.nullcontext() if bar.disable else logging_redirect_tqdm()
        try:
            with redirect:
                if scheduler is None and jobs <= 1:
                    _run_here(plan, steps, report, bar)
                else:
                    with _main_kept_from_workers(local=scheduler is None), _quiet_dask(scheduler is None):
                        _run_dask(plan, steps, report, bar, jobs, scheduler)
        finally:
            bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def _finished(task: Task, seconds: float, report: Report, bar) -> None:
    report.done += 1
    bar.update(1)
    logger.info("done: %s (%.1f s)", task.label, seconds)


def _run_here(plan: Plan, steps: list[Step], report: Report, bar) -> None:
    """One task after the other in this process: the easy way to debug."""
    waiting = list(steps)
    done: set[Task] = set()
    last = None
    progress = logger.isEnabledFor(logging.INFO)
    while waiting:
        ready = [s.task for s in waiting if all(a in done for a in s.after)]
        # training first; among the rest, the seed this process holds
        task = min(ready, key=lambda t: (t.order()[0], t.seed != last, t.order()))
        waiting = [s for s in waiting if s.task != task]
        last = task.seed
        logger.info("start: %s", task.label)
        t0 = time.perf_counter()
        try:
            with as_interrupt():
                perform(plan.cfg, task, progress)
        except Exception as exc:
            logger.debug("%s failed", task.label, exc_info=True)
            raise failure(task.label, exc) from exc
        done.add(task)
        _finished(task, time.perf_counter() - t0, report, bar)
        released = plan.released_by(task)
        waiting += released
        bar.total += len(released)
        bar.refresh()


@contextlib.contextmanager
def _quiet_dask(local: bool):
    """The local cluster's own log records (its start, its shutdown and the races of its
    connections closing, some with a traceback) stay quiet in this process from the
    cluster's start to the end of its shutdown: what a task did is reported here."""
    if not local:
        yield
        return
    dask_log = logging.getLogger("distributed")
    saved = dask_log.level
    dask_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        dask_log.setLevel(saved)


@contextlib.contextmanager
def _main_kept_from_workers(local: bool):
    """The local cluster's worker processes start without running the calling script.

    A spawned worker process first runs the main script of the process that started it
    (as ``__mp_main__``): a script that calls ``run()`` without ``if __name__ ==
    "__main__":`` would start the run again in every worker, and multiprocessing stops
    each of them with a traceback. The workers need nothing of that script (their tasks
    are this package's functions), so while the local cluster lives the main module shows
    neither its file nor its module name, as a notebook's does not.
    """
    main = sys.modules.get("__main__")
    if not local or main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


_QUIET_WORKERS = {"DASK_LOGGING__DISTRIBUTED": "critical"}


def _priority(task: Task) -> int:
    """Dask priority (larger first) following Task.order."""
    kind, seed, method, n = task.order()
    return -(((kind * 1000 + seed) * 10 + method + 1) * 10**7 + n + 1)


def _run_dask(plan: Plan, steps: list[Step], report: Report, bar, jobs: int,
              scheduler: str | None) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        # the workers inherit an ignored SIGINT: Ctrl-C is this process's to handle
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        # a failed task is reported here in one line: the workers' own report of it (a
        # block with a traceback) and their start-up messages stay quiet
        env = {k: os.environ.get(k) for k in _QUIET_WORKERS}
        os.environ.update(_QUIET_WORKERS)
        try:
            # no dashboard; the scheduler's HTTP routes on a free port (not 8787, which
            # another run or notebook on this machine may hold)
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                                   silence_logs=logging.CRITICAL)
        finally:
            signal.signal(signal.SIGINT, previous)
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    try:
        client = Client(cluster if cluster is not None else scheduler)
    except (OSError, ValueError, TypeError) as exc:
        if cluster is not None:
            cluster.close()
        raise ValueError(f"--scheduler: no Dask scheduler reachable at {scheduler} ({one_line(exc)})") from exc
    # the workers may run elsewhere: folders by their absolute names
    data_dir = plan.cfg.data_dir and str(Path(plan.cfg.data_dir).resolve())
    cfg = replace(plan.cfg, output=str(Path(plan.cfg.output).resolve()), data_dir=data_dir)
    token = uuid.uuid4().hex[:8]  # keys of this run only (a shared cluster runs others too)
    futures: dict[Task, object] = {}
    tasks: dict[str, Task] = {}
    pending = as_completed()
    quiet = None  # the Dask loggers' level before an interruption quietened them
    try:
        client.register_plugin(WorkerSetup(logging.getLogger("sgd_influence").getEffectiveLevel(),
                                           local=cluster is not None), name=PLUGIN_NAME)
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        gpu = one_task_per_gpu(cfg.context, workers)
        n_workers = len(workers)
        report.workers = n_workers
        logger.info("running on %s: %d worker(s)%s", "a local Dask cluster" if cluster else scheduler,
                    n_workers, ", one task per GPU" if gpu else "")

        def submit(batch: list[Step]) -> None:
            for step in batch:
                key = f"{step.task.label} [{token}]"
                fut = client.submit(run_task, cfg, step.task, *(futures[a] for a in step.after),
                                    key=key, priority=_priority(step.task),
                                    resources={"GPU": 1} if gpu else None)
                futures[step.task] = fut
                tasks[key] = step.task
                pending.add(fut)

        submit(steps)
        for fut in pending:
            task = tasks[fut.key]
            if fut.status != "finished":
                raise _dask_failure(task, fut)
            _finished(task, fut.result(), report, bar)
            released = plan.released_by(task)
            submit(released)
            bar.total += len(released)
            bar.refresh()
    except KeyboardInterrupt:
        # Ctrl-C: the workers stop in the middle of their tasks; that the nannies kill the
        # ones busy past their grace time is expected, not worth a warning
        dask_log = logging.getLogger("distributed")
        quiet = dask_log.level
        dask_log.setLevel(logging.ERROR)
        raise
    finally:
        client.cancel(list(futures.values()), force=True)
        client.close()
        if cluster is not None:
            cluster.close()
        if quiet is not None:
            dask_log.setLevel(quiet)


def _dask_failure(task: Task, fut) -> BaseException:
    if fut.status != "error":  # cancelled or lost by the cluster
        return TaskFailed(f"{task.label} failed: the Dask cluster reported the task {fut.status}")
    exc = fut.exception()
    logger.debug("%s failed:\n%s", task.label, "".join(traceback.format_tb(fut.traceback())))
    if type(exc).__name__ == "KilledWorker":
        return TaskFailed(f"{task.label} failed: every worker process that ran it died "
                          "(Dask gave up after distributed.scheduler.allowed-failures retries; "
                          "see the workers' logs)")
    return failure(task.label, exc)


def one_task_per_gpu(context: str, workers) -> bool:
    """True when tasks should each hold one ``GPU`` resource: a GPU context may be used
    and some worker declares GPUs (``dask worker ... --resources GPU=1``, dask-cuda)."""
    return context != "cpu" and any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)
