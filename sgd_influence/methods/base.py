"""The influence-method seam.

A method is one module with one :class:`Method` object registered under its name
(:func:`register`). It says

* ``needs``: what of a training run it reads: ``"trajectory"`` (the record and the
  epoch snapshots, for a walk over the window), ``"final"`` (the final state only) or
  ``"nothing"`` (a control that looks at no model);
* ``Settings`` (optional): a frozen dataclass of its own settings made with
  :func:`sgd_influence.settings.setting` (default, flags, help); every command that runs
  methods takes their flags, the Python API takes them as keywords;
* ``settings(cfg)``: what its scores depend on besides the training run, a small dict
  (usually :func:`sgd_influence.settings.identity` of its ``Settings``); it keys its
  results in the store, so changing one method's settings never touches another's;
* ``scores(ctx) -> (scores, facts)``: one score per training sample in this project's
  sign (negative = removing the sample lowers the validation loss = harmful) and what
  the computation reports (``facts``, saved as ``influence_{seed}.json`` when not empty);
* ``color``: its line colour in the figures.

:class:`Context` hands a method what one trial offers: the configuration, the seed,
the prepared data, and (lazily) the record, an engine holding the final state and the
gradient operations on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import registry, settings, trajectory
from ..context import resolve_context_name
from ..engine import Engine, Prepared, model_spec
from .grads import GradientOps, hvp_mode

NEEDS = ("trajectory", "final", "nothing")


class Method(Protocol):
    name: str
    needs: str
    color: str

    def settings(self, cfg) -> dict:
        """This method's own settings (its saved identity, beside the training run's)."""

    def scores(self, ctx: "Context") -> tuple[np.ndarray, dict]:
        """One score per training sample, and the facts of the computation."""


def register(method) -> Any:
    """Register ``method`` (an object with the attributes of :class:`Method`, and
    ``Settings``, the frozen dataclass of its own settings, when it has any)."""
    if method.needs not in NEEDS:
        raise ValueError(f"method {method.name}: needs must be one of {NEEDS}, got {method.needs!r}")
    settings.declare("method", method.name, getattr(method, "Settings", None))
    registry.methods.register(method.name, method)
    return method


def get(name: str):
    return registry.methods.get(name)


def names() -> tuple[str, ...]:
    return registry.methods.names()


@dataclass
class Context:
    """What one trial offers a method."""

    cfg: Any
    seed: int
    data: Prepared
    per_sample: str = "auto"
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output)

    def progress(self, what: str) -> str:
        return f"{what} seed {self.seed}"

    def record(self) -> trajectory.Record:
        if "record" not in self._cache:
            self._cache["record"] = trajectory.load_record(self.out, self.seed)
        return self._cache["record"]

    def window(self) -> range:
        """The recorded steps of the influence window (``--infl-epochs``)."""
        return self.record().window(self.cfg.window_epochs())

    def new_engine(self) -> Engine:
        """A fresh engine of this trial's network (initial parameters)."""
        return Engine(model_spec(self.cfg, self.data), self.seed, self.data, augment=self.cfg.augment)

    def final_engine(self) -> Engine:
        """The engine holding the trained model (parameters and running statistics)."""
        if "engine" not in self._cache:
            engine = self.new_engine()
            engine.net.load_state_dict(trajectory.load_final_state(self.out, self.seed, self.record()))
            self._cache["engine"] = engine
        return self._cache["engine"]

    def ops(self) -> GradientOps:
        """The gradient operations on the final engine's network."""
        if "ops" not in self._cache:
            self._cache["ops"] = GradientOps(self.final_engine(), self.per_sample,
                                             resolve_context_name(self.cfg.context), hvp_mode(self.cfg))
        return self._cache["ops"]
