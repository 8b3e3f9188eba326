"""Scheduling of the pipeline's work: training runs, influence computations and retrains.

The work of a run is a small dependency graph of tasks:

* ``train`` (one per seed),
* ``infl`` (seed x method; after the seed's training),
* ``eval`` (one retrain: seed x method x n, after that influence file; n = 0, "No
  Removal", once per seed for every method, after the training).

nnabla computes on one core per process, so tasks run in ``--jobs`` worker processes
started with the 'spawn' method; each sets its own nnabla context and keeps the
prepared data of the seed it worked on last (tasks of the seed a worker already holds
are preferred). With ``--jobs 1`` the same tasks run in this process, in the same
order of preference. Every task writes its files atomically and reuses finished ones,
so the files do not depend on the number of workers or on interruptions.

A task that fails stops the run: the other workers are stopped, finished files stay,
and the error is reported in one line (errors in the input keep their own message and
exit status 2; anything else is "<task> failed: <error>", exit status 1).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from . import checks, fileio, paths, runlock
from . import config as C
from .eval import EvalJob, plan_jobs, prepare_score_folder, run_eval_job, warn_skipped

logger = logging.getLogger(__name__)

PHASES = ("train", "infl", "eval")
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, FloatingPointError)
DATASETS = ("mnist5k", "mnist", "cifar10", "stl10", "csv")
_RANK = {"train": 0, "infl": 1, "eval": 2}


class PipelineError(RuntimeError):
    """A task failed for a reason other than bad input; the message is one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --------------------------------------------------------------------------- CLI plumbing
def config_from_folder(ns: argparse.Namespace) -> C.Config:
    """Defaults < the output folder's saved run configuration < preset < flags."""
    given = {k: v for k, v in vars(ns).items() if k in C.ALL_FIELDS}
    out = given.get("output", C.Config.output)
    saved_path = paths.run_config(out)
    if not saved_path.exists():
        return C.from_args(ns)
    keep = set(C.Config().train_identity()) | set(C.Config().eval_identity()) | {
        "n_trials", "methods", "remove_n_list", "noise_floor_k", "noise_floor_draws", "data_dir",
        "train_csv", "val_csv", "test_csv"}
    saved = fileio.read_json(saved_path)
    values = {k: v for k, v in saved.items() if k in keep}
    if "train_csv" in given or "dataset" in given:  # a data set given here replaces the saved one
        for k in ("dataset", "train_csv", "val_csv", "test_csv"):
            values.pop(k, None)
    if given.get("preset"):
        values.update(C.PRESETS[given["preset"]])
    values.update(given)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if values.get("train_csv") and "dataset" not in values:
        values["dataset"] = "csv"
    logger.info("settings of %s used as defaults", saved_path)
    return C.Config(**values).validate()


def check_config(cfg: C.Config) -> None:
    """Checks the configuration cannot do itself (one line naming the flag)."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"-ds/--dataset: expected one of {', '.join(DATASETS)}, got {cfg.dataset!r}")
    for flag, value in (("--train-csv", cfg.train_csv), ("--val-csv", cfg.val_csv),
                        ("--test-csv", cfg.test_csv)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{flag}: no such file: {value}")


def cli_main(parser: argparse.ArgumentParser, argv, body, *, saved_defaults: bool = False) -> int:
    """Parse, build the configuration, set the nnabla context and run ``body(cfg, ns)``.

    Bad input ends with one error line and exit status 2, a failed task with one line
    and exit status 1.
    """
    from .cli import setup_logging
    from .context import set_context

    ns = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_folder(ns) if saved_defaults else C.from_args(ns)
        check_config(cfg)
        cfg = C.resolve_data(cfg)
        set_context(cfg.context, cfg.device_id)
        with runlock.hold(cfg.output, wait=cfg.wait):
            body(cfg, ns)
    except fileio.WriteError as exc:
        logger.error("%s", exc)
        return 1
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        logger.error("%s", msg)
        return 2
    except PipelineError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted: finished files are kept; the same command resumes the run")
        return 130
    return 0


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    kind: str  # 'train' | 'infl' | 'eval'
    seed: int
    method: str | None = None  # infl
    job: EvalJob | None = None  # eval

    @property
    def label(self) -> str:
        if self.kind == "train":
            return f"train seed {self.seed}"
        if self.kind == "infl":
            return f"influence {self.method} seed {self.seed}"
        return self.job.label

    def order(self) -> tuple:
        """Preference among ready tasks (smaller first); independent of timing."""
        method = self.method or (self.job.needs_influence if self.job else None) or ""
        n = self.job.n if self.job else -1
        method_rank = C.METHODS.index(method) if method in C.METHODS else -1
        return (_RANK[self.kind], self.seed, method_rank, n)


@dataclass
class Outcome:
    task: Task
    seconds: float
    error: BaseException | None = None
    error_line: str = ""
    traceback: str = ""


class Runner:
    """Executes tasks in one process, keeping the prepared data of the last seed."""

    def __init__(self, cfg: C.Config, progress: bool, cache_size: int = 1):
        self.cfg = cfg
        self.progress = progress
        self.cache_size = cache_size
        self._data: OrderedDict[int, object] = OrderedDict()

    def data(self, seed: int):
        from .engine import load_prepared

        if seed in self._data:
            self._data.move_to_end(seed)
            return self._data[seed]
        while len(self._data) >= self.cache_size:
            self._data.popitem(last=False)
        d = self._data[seed] = load_prepared(self.cfg, seed)
        return d

    def run(self, task: Task) -> None:
        cfg = self.cfg
        if task.kind == "train":
            from .train import run_training

            run_training(cfg, task.seed, self.data(task.seed))
        elif task.kind == "infl":
            from .infl import run_influence

            run_influence(cfg, task.seed, task.method, self.data(task.seed))
        elif task.kind == "eval":
            run_eval_job(cfg, task.job, self.data(task.seed), progress=self.progress)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")

    def execute(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
        try:
            self.run(task)
        except Exception as exc:  # reported to the scheduler, which stops the run
            return Outcome(task, time.perf_counter() - t0, _picklable(exc), _one_line(exc),
                           traceback.format_exc())
        return Outcome(task, time.perf_counter() - t0)


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception that cannot cross processes: keep its text only
        return None


def raise_failure(outcome: Outcome) -> None:
    logger.debug("%s failed:\n%s", outcome.task.label, outcome.traceback)
    exc = outcome.error
    if isinstance(exc, (*USER_ERRORS, fileio.WriteError)):
        raise exc
    kind = type(exc).__name__ if exc is not None else "error"
    raise PipelineError(f"{outcome.task.label} failed: {kind}: {outcome.error_line}")


# --------------------------------------------------------------------------- workers
def _worker_main(conn, cfg_dict: dict, parent_pid: int, level: int, name: str) -> None:
    """Entry point of a worker process: receive tasks, send outcomes, until told to stop."""
    # Ctrl-C reaches the whole process group: the scheduling process handles it and
    # stops the workers (their unfinished temporary files are removed on the next run).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("sgd_influence").setLevel(level)
    logging.getLogger("nnabla").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if not sys.stderr.isatty():
        # Progress bars of parallel workers interleave into an unreadable log: off the
        # terminal only log lines are kept (the handler above holds the real stderr).
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    from tqdm import tqdm

    # a thread lock instead of tqdm's default multiprocessing one, whose semaphore a
    # stopped worker would leave to the resource tracker (a warning at exit)
    tqdm.set_lock(threading.RLock())
    _watch_parent(parent_pid)
    cfg = C.Config.from_dict(cfg_dict)
    from .context import set_context

    set_context(cfg.context, cfg.device_id)
    runner = Runner(cfg, progress=False)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(runner.execute(task))


def _watch_parent(parent_pid: int) -> None:
    """End this worker when the scheduling process is gone (killed), not later."""

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: mp.connection.Connection
    name: str
    task: Task | None = None
    last_seed: int | None = None
    started: float = 0.0


@dataclass
class _Ready:
    heap: list = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def push(self, task: Task) -> None:
        heapq.heappush(self.heap, (task.order(), next(self.counter), task))

    def pop_for(self, seed: int | None) -> Task:
        """The first task, preferring (within its kind) the seed a worker already holds."""
        best = self.heap[0][2]
        if seed is not None:
            same = [e for e in self.heap if e[2].kind == best.kind and e[2].seed == seed]
            if same:
                entry = min(same)
                self.heap.remove(entry)
                heapq.heapify(self.heap)
                return entry[2]
        return heapq.heappop(self.heap)[2]

    def __len__(self) -> int:
        return len(self.heap)


class Scheduler:
    """Runs tasks (and the tasks their completion releases) on ``n_jobs`` processes."""

    def __init__(self, cfg: C.Config, n_jobs: int):
        self.cfg = cfg
        self.n_jobs = max(1, n_jobs)
        self.workers: list[_Worker] = []
        self.done = 0
        self._started = 0

    def run(self, initial: list[Task], on_done) -> None:
        ready = _Ready()
        for t in initial:
            ready.push(t)
        if not len(ready):
            return
        if self.n_jobs == 1:
            self._run_here(ready, on_done)
        else:
            try:
                self._run_pool(ready, on_done)
            finally:
                self._stop_workers()

    def _finished(self, outcome: Outcome, ready: _Ready, on_done) -> None:
        if outcome.error is not None or outcome.error_line:
            raise_failure(outcome)
        self.done += 1
        logger.info("done: %s (%.1f s)", outcome.task.label, outcome.seconds)
        for t in on_done(outcome.task):
            ready.push(t)

    def _run_here(self, ready: _Ready, on_done) -> None:
        runner = Runner(self.cfg, progress=logger.isEnabledFor(logging.INFO))
        last = None
        while len(ready):
            task = ready.pop_for(last)
            last = task.seed
            logger.info("start: %s", task.label)
            self._finished(runner.execute(task), ready, on_done)

    def _start_worker(self) -> _Worker:
        ctx = mp.get_context("spawn")
        self._started += 1
        name = f"w{self._started}"
        here, there = ctx.Pipe()
        level = logging.getLogger("sgd_influence").getEffectiveLevel()
        proc = ctx.Process(target=_worker_main, name=f"sgd-influence-{name}", daemon=True,
                           args=(there, self.cfg.to_dict(), os.getpid(), level, name))
        proc.start()
        there.close()
        w = _Worker(proc, here, name)
        self.workers.append(w)
        return w

    def _run_pool(self, ready: _Ready, on_done) -> None:
        while True:
            for w in [w for w in self.workers if w.task is None and not w.process.is_alive()]:
                logger.warning("worker %s ended (exit code %s); starting another", w.name,
                               w.process.exitcode)
                w.conn.close()
                self.workers.remove(w)
            idle = [w for w in self.workers if w.task is None]
            while len(ready) and (idle or len(self.workers) < self.n_jobs):
                w = idle.pop(0) if idle else self._start_worker()
                task = ready.pop_for(w.last_seed)
                w.task, w.last_seed, w.started = task, task.seed, time.perf_counter()
                logger.info("start: %s [%s]", task.label, w.name)
                w.conn.send(task)
            busy = [w for w in self.workers if w.task is not None]
            if not busy:
                return
            waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            multiprocessing.connection.wait(waitables)
            for w in busy:
                if w.conn.poll():
                    try:
                        outcome = w.conn.recv()
                    except EOFError:
                        outcome = None
                    if outcome is not None:
                        w.task = None
                        self._finished(outcome, ready, on_done)
                        continue
                if not w.process.is_alive():
                    task = w.task
                    raise PipelineError(f"{task.label} failed: worker process {w.name} ended "
                                        f"(exit code {w.process.exitcode})")

    def _stop_workers(self) -> None:
        for w in self.workers:
            if w.process.is_alive() and w.task is None:
                try:
                    w.conn.send(None)
                except OSError:  # already gone
                    pass
        deadline = time.monotonic() + 5.0
        for w in self.workers:
            if w.task is None:
                w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(5.0)
            w.conn.close()
        self.workers = []


# --------------------------------------------------------------------------- the plan
class Plan:
    """Which tasks of the requested phases remain, released as their inputs get done."""

    def __init__(self, cfg: C.Config, phases, seeds):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.phases = tuple(phases)
        self.seeds = list(seeds)
        self._eval_after_infl: dict[tuple[int, str], list[EvalJob]] = {}
        self._warned: set = set()

    # -- state of finished work
    def train_done(self, seed: int) -> bool:
        from .train import train_done

        if "train" not in self.phases:
            C.check_trained_with(self.cfg, self.out, seed)
        same = C.check_saved(paths.train_identity(self.out, seed), self.cfg.train_identity(),
                             self.cfg.overwrite and "train" in self.phases, "training run")
        return same and train_done(self.cfg, seed)

    def infl_done(self, seed: int, method: str) -> bool:
        return self.infl_problem(seed, method) is None

    def infl_problem(self, seed: int, method: str) -> str | None:
        """None when the influence file is there and whole, else why not."""
        from .trajectory import Record

        path = paths.influence(self.out, method, seed)
        if not path.exists():
            return "not found"
        if not paths.record(self.out, seed).exists():
            return None  # checked against the training run once it exists
        problem = checks.influence_problem(path, Record.load(paths.record(self.out, seed)).n_train)
        return f"damaged ({problem})" if problem else None

    # -- planning
    def initial(self) -> list[Task]:
        missing = []
        for s in self.seeds:
            if "train" not in self.phases and not self.train_done(s):
                missing.append(f"{paths.record(self.out, s)}: no finished training run of this "
                               f"configuration for seed {s} (run the training phase first)")
            if "infl" not in self.phases and "eval" in self.phases:
                for m in self.cfg.methods:
                    problem = self.infl_problem(s, m)
                    if problem:
                        missing.append(f"{paths.influence(self.out, m, s)}: {problem} (run the "
                                       "influence phase to compute it)")
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(missing[0] + more)
        tasks: list[Task] = []
        for s in self.seeds:
            if self.train_done(s):
                tasks += self._after_train(s)
            else:
                tasks.append(Task("train", s))
        return tasks

    def on_done(self, task: Task) -> list[Task]:
        if task.kind == "train":
            return self._after_train(task.seed)
        if task.kind == "infl":
            return self._after_infl(task.seed, task.method)
        return []

    def _after_train(self, seed: int) -> list[Task]:
        from .trajectory import Record

        tasks: list[Task] = []
        if "eval" in self.phases:
            n_train = Record.load(paths.record(self.out, seed)).n_train
            jobs, skipped = plan_jobs(self.cfg, seed, n_train)
            key = (n_train, tuple(skipped))
            if skipped and key not in self._warned:
                self._warned.add(key)
                warn_skipped(skipped, n_train)
            for job in jobs:
                if job.done(self.out):
                    continue
                if job.needs_influence is not None:
                    self._eval_after_infl.setdefault((seed, job.needs_influence), []).append(job)
                elif job.n == 0 and any(job.reusable(p) for p in job.targets(self.out)):
                    run_eval_job(self.cfg, job)  # copies the seed's No Removal scores
                else:  # No Removal and the noise floor need the training run only
                    tasks.append(Task("eval", seed, job=job))
        if "infl" in self.phases or "eval" in self.phases:
            for m in self.cfg.methods:
                if self.infl_done(seed, m):
                    tasks += self._after_infl(seed, m)
                elif "infl" in self.phases:
                    tasks.append(Task("infl", seed, method=m))
        return tasks

    def _after_infl(self, seed: int, method: str) -> list[Task]:
        jobs = self._eval_after_infl.pop((seed, method), [])
        return [Task("eval", seed, job=j) for j in jobs]


def prepare_influence_folder(cfg: C.Config) -> None:
    """Refuse (or with --overwrite clear) influence files of another configuration."""
    out = Path(cfg.output)
    C.claim_folder(paths.influence_identity(out), paths.phase_root(out, "influence"),
                   cfg.infl_identity(), cfg.overwrite, "influence result")


_TMP = re.compile(r"^\..+\.tmp(\d+)$")


def clean_stale_tmp(out) -> None:
    """Delete temporary files left by killed processes (their process no longer exists)."""
    out = Path(out)
    if not out.is_dir():
        return
    for root, _dirs, files in os.walk(out):
        for name in files:
            m = _TMP.match(name)
            if m and not _pid_alive(int(m.group(1))):
                (Path(root) / name).unlink(missing_ok=True)
                logger.debug("removed stale temporary file %s", Path(root) / name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_pipeline(cfg: C.Config, phases=PHASES, seeds=None) -> None:
    """Run the requested phases for ``seeds`` (default: every trial), reusing finished files."""
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ValueError(f"unknown phase {bad[0]!r}")
    out = Path(cfg.output)
    seeds = list(range(cfg.n_trials)) if seeds is None else list(seeds)
    clean_stale_tmp(out)
    if "infl" in phases:
        prepare_influence_folder(cfg)
    elif "eval" in phases:
        if not C.check_saved(paths.influence_identity(out), cfg.infl_identity(), False, "influence result"):
            raise FileNotFoundError(f"{paths.influence_identity(out)}: no influence results "
                                    "(run the influence phase first)")
    if "eval" in phases:
        prepare_score_folder(cfg)
    plan = Plan(cfg, phases, seeds)
    initial = plan.initial()
    sched = Scheduler(cfg, cfg.n_jobs())
    t0 = time.perf_counter()
    sched.run(initial, plan.on_done)
    if sched.done:
        logger.info("%d task(s) finished in %.1f s with %d job(s)", sched.done,
                    time.perf_counter() - t0, sched.n_jobs)
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


def run_all(cfg: C.Config) -> None:
    """Train, compute influence, retrain and analyse: the whole pipeline of one folder."""
    from .analyze import analyze

    check_run_config(cfg)
    run_pipeline(cfg, PHASES)
    analyze(cfg.output, methods=cfg.methods, ns=cfg.remove_n_list, seeds=range(cfg.n_trials),
            title=run_title(cfg))


def run_title(cfg: C.Config) -> str:
    data = Path(cfg.train_csv).name if cfg.is_csv else cfg.dataset
    window = "all epochs" if cfg.infl_epochs == 0 else f"last {cfg.infl_epochs} epoch(s)"
    return f"{data}, {cfg.model}, {cfg.n_epochs} epochs, window {window}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use train_infl_eval.py or python -m sgd_influence.eval")
