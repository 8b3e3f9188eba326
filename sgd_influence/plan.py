"""The plan of a run: which tasks remain and which task each one waits for.

The work is a graph of tasks:

* ``train`` (one per seed),
* ``infl`` (seed x method; after the seed's training),
* ``eval`` (one retrain, :class:`~sgd_influence.eval.EvalJob`: seed x method x n, after
  that influence file; n = 0, "No Removal", once per seed for every method, and the
  noise-floor retrains, after the training).

The retrains of a seed are known once its training is finished (an n not smaller than
the training set is skipped), so a finished ``train`` task releases the rest of its
seed's graph: :meth:`Plan.initial` gives the first tasks, :meth:`Plan.released_by`
those a finished task makes known. Planning only reads the output folder; every file
is written by a task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import config as C
from . import fileio, paths, registry, store, view
from .eval import EvalJob, plan_jobs, warn_skipped
from .infl import image_check, influence_state
from .train import training_state
from .trajectory import Record

logger = logging.getLogger(__name__)

PHASES = ("train", "infl", "eval")
_RANK = {"train": 0, "infl": 1, "eval": 2}


@dataclass(frozen=True)
class Task:
    kind: str  # 'train' | 'infl' | 'eval'
    seed: int
    method: str | None = None  # infl
    job: EvalJob | None = None  # eval
    per_sample: str = "auto"  # infl: how per-sample terms are computed

    @property
    def label(self) -> str:
        if self.kind == "train":
            return f"train seed {self.seed}"
        if self.kind == "infl":
            return f"influence {self.method} seed {self.seed}"
        return self.job.label

    def order(self) -> tuple:
        """Preference among ready tasks (smaller first): training, influence, retrains;
        then by seed, method and n. Independent of timing."""
        method = self.method or (self.job.needs_influence if self.job else None) or ""
        n = self.job.n if self.job else -1
        method_rank = registry.methods.rank(method)
        return (_RANK[self.kind], self.seed, method_rank, n)


@dataclass(frozen=True)
class Step:
    """A task of the plan and the tasks (released together with it) it waits for."""

    task: Task
    after: tuple[Task, ...] = ()


class Plan:
    """Which tasks of the requested phases remain, known as their inputs get done."""

    def __init__(self, cfg: C.Config, phases, seeds, per_sample: str = "auto"):
        bad = [p for p in phases if p not in PHASES]
        if bad:
            raise ValueError(f"unknown phase {bad[0]!r}")
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.phases = tuple(phases)
        self.seeds = list(seeds)
        self.per_sample = per_sample
        self._warned: set = set()
        self._is_image = None
        self._trained: dict[int, tuple] = {}

    # -- the view (before anything is planned)
    def point_view(self) -> None:
        """Link this configuration's results in the output folder (see :mod:`.view`); the
        view stays as it was when the inputs of a phase asked for are missing."""
        before = view.links_now(self.out), {e.path for e in store.entries(self.out)}
        view.point(self.cfg, self.phases, self.seeds)
        try:
            self.check_inputs()
        except (FileNotFoundError, fileio.DamagedFile):
            view.restore(self.out, *before)
            raise

    # -- state of finished work (read only)
    def train_state(self, seed: int) -> tuple[str, tuple[Path, str] | None]:
        """Whether the seed's training run is reused (train.training_state), asked of its
        files once: reading back a run checks every snapshot's checksum."""
        if seed not in self._trained:
            self._trained[seed] = training_state(self.cfg, seed, report="train" in self.phases)
        return self._trained[seed]

    def infl_done(self, seed: int, method: str) -> bool:
        return self.infl_problem(seed, method) is None

    def infl_problem(self, seed: int, method: str) -> str | None:
        """None when the influence file is there and whole, else why not."""
        if not paths.record(self.out, seed).exists():
            # checked against the training run once it exists
            return None if paths.influence(self.out, method, seed).exists() else "not found"
        if self._is_image is None:
            self._is_image = image_check(self.cfg)
        state, detail = influence_state(self.cfg, seed, method, self._is_image)
        return {"done": None, "missing": "not found", "damaged": f"damaged ({detail})",
                "images moved": "an x:image that is not an image of the data set where it is now"}[state]

    # -- planning
    def initial(self) -> list[Step]:
        """The tasks known before anything runs (the inputs checked by :meth:`point_view`)."""
        steps: list[Step] = []
        for s in self.seeds:
            if self.train_state(s)[0] == "done":
                steps += self._after_train(s)
            else:
                steps.append(Step(Task("train", s)))
        return steps

    def check_inputs(self) -> None:
        """Refuse a phase whose inputs (an earlier phase's results) are missing."""
        missing = []
        for s in self.seeds:
            state, problem = ("done", None) if "train" in self.phases else self.train_state(s)
            if state in ("damaged", "damaged cache"):
                raise fileio.damaged(*problem, f"train seed {s} again (the training phase, "
                                     "or the whole pipeline)")
            if state == "no cache":
                missing.append(f"{problem[0]}: not found (write it with the training phase and "
                               "--hara-cache, or leave --hara-cache out)")
            elif state != "done":
                elsewhere = view.other_settings(
                    self.out, "train", None, self.cfg.train_identity(),
                    lambda p, s=s: (p / f"seed_{s}" / paths.record(".", s).name).exists())
                missing.append(f"{paths.record(self.out, s)}: no finished training run of this "
                               f"configuration for seed {s}{elsewhere} (run the training phase first)")
            if "infl" not in self.phases and "eval" in self.phases:
                for m in self.cfg.methods:
                    problem = self.infl_problem(s, m)
                    if problem:
                        elsewhere = view.other_settings(
                            self.out, "influence", m, view.influence_identity(self.cfg, m),
                            lambda p, s=s: bool(store.seed_files(p, "influence", s)))
                        missing.append(f"{paths.influence(self.out, m, s)}: {problem}{elsewhere} "
                                       "(compute it with the influence phase: python -m "
                                       "sgd_influence.infl, or the whole pipeline)")
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(missing[0] + more)

    def released_by(self, task: Task) -> list[Step]:
        """The tasks a finished ``task`` makes known (its seed's graph after training)."""
        return self._after_train(task.seed) if task.kind == "train" else []

    def _after_train(self, seed: int) -> list[Step]:
        steps: list[Step] = []
        infl: dict[str, Task] = {}
        if "infl" in self.phases:
            for m in self.cfg.methods:
                if not self.infl_done(seed, m):
                    infl[m] = Task("infl", seed, method=m, per_sample=self.per_sample)
                    steps.append(Step(infl[m]))
        if "eval" in self.phases:
            n_train = Record.load(paths.record(self.out, seed)).n_train
            jobs, skipped = plan_jobs(self.cfg, seed, n_train)
            if skipped and not any(j.n in self.cfg.remove_n_list and not j.is_floor for j in jobs):
                raise ValueError(
                    f"-r/--remove_n_list: every n ({' '.join(str(n) for n in skipped)}) is not "
                    f"smaller than the training set of seed {seed} ({n_train} samples): nothing to "
                    "retrain; give smaller numbers (the training run is kept)")
            key = (n_train, tuple(skipped))
            if skipped and key not in self._warned:
                self._warned.add(key)
                warn_skipped(skipped, n_train)
            for job in jobs:
                if job.done(self.out):
                    continue
                # No Removal and the noise floor need the training run only
                m = job.needs_influence
                steps.append(Step(Task("eval", seed, job=job), (infl[m],) if m in infl else ()))
        return steps
