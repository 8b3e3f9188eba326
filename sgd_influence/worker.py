"""What runs one task, in this process (``--jobs 1``) or in a Dask worker process.

Every such process sets its nnabla context once and keeps the prepared data of the
seed it worked on last (:func:`perform`); a Dask worker runs a task through
:func:`run_task`, set up by the worker plugin :class:`WorkerSetup`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from distributed.diagnostics.plugin import WorkerPlugin
from tqdm import tqdm

from . import config as C
from .context import set_context
from .engine import load_prepared
from .eval import run_eval_job
from .infl import run_influence
from .plan import Task
from .train import run_training


def device_id(configured: int, environ: Mapping[str, str]) -> int:
    """The GPU a worker process computes on.

    A worker started with ``CUDA_VISIBLE_DEVICES`` (by dask-cuda, which lists each
    worker's own GPU first, by a batch system's GPU allocation, or by hand:
    ``CUDA_VISIBLE_DEVICES=2 dask worker ...``) uses the first device it sees, 0.
    Otherwise ``-di/--device-id``.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible.split(",")[0].strip() not in ("-1", "NoDevFiles"):
        return 0
    return configured


@dataclass
class _Process:
    """What a process keeps between tasks: its nnabla context and one seed's data."""

    context: tuple | None = None
    data_key: tuple | None = None
    data: object = None

    def set_context(self, cfg: C.Config) -> None:
        key = (cfg.context, device_id(cfg.device_id, os.environ))
        if key != self.context:
            set_context(*key)
            self.context = key

    def prepared(self, cfg: C.Config, seed: int):
        key = (json.dumps(cfg.to_dict(), sort_keys=True), seed)
        if key != self.data_key:
            self.data, self.data_key = None, None  # free the previous seed first
            self.data, self.data_key = load_prepared(cfg, seed), key
        return self.data


_PROCESS = _Process()


def perform(cfg: C.Config, task: Task, progress: bool) -> None:
    """The body of one task, with this process's prepared data of the task's seed."""
    _PROCESS.set_context(cfg)
    data = functools.partial(_PROCESS.prepared, cfg, task.seed)  # loaded when a task needs it
    if task.kind == "train":
        run_training(cfg, task.seed, data())
    elif task.kind == "infl":
        run_influence(cfg, task.seed, task.method, data(), per_sample=task.per_sample)
    elif task.kind == "eval":
        run_eval_job(cfg, task.job, data, progress=progress)
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")


def run_task(cfg: C.Config, task: Task, *after) -> float:
    """A task on a Dask worker (``after``: the results it waited for); returns seconds."""
    t0 = time.perf_counter()
    perform(cfg, task, progress=False)
    return time.perf_counter() - t0


class WorkerSetup(WorkerPlugin):
    """Dask worker plugin: logging like the run's, GPU resources, Ctrl-C left to the run.

    Workers of the local cluster ignore SIGINT (Ctrl-C reaches the whole process
    group; the run stops them) and, off a terminal, drop progress bars, whose lines
    from parallel workers interleave into an unreadable log.
    """

    idempotent = False

    def __init__(self, level: int, local: bool):
        self.level = level
        self.local = local

    def setup(self, worker) -> None:
        if self.local and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # tqdm's default lock holds a multiprocessing semaphore; a worker stopped in the middle
        # of a task (Ctrl-C) would leave it to the resource tracker's "leaked semaphore"
        # warning. A worker's bars need a lock among its own threads only.
        tqdm.set_lock(threading.RLock())
        pkg = logging.getLogger("sgd_influence")
        if not any(getattr(h, "_sgd_influence", False) for h in pkg.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler._sgd_influence = True
            handler.setFormatter(logging.Formatter(
                f"%(asctime)s %(levelname)s [{worker.name}] %(name)s: %(message)s", datefmt="%H:%M:%S"))
            pkg.addHandler(handler)
            pkg.propagate = False
        pkg.setLevel(self.level)
        logging.getLogger("nnabla").setLevel(logging.WARNING)
        if self.local and not sys.stderr.isatty():
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)

    def teardown(self, worker) -> None:
        _PROCESS.data, _PROCESS.data_key = None, None
