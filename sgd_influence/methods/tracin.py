"""TracIn, checkpoint version (Pruthi et al. 2020): the methods ``TracIn`` and ``TracInSelf``.

A training step on a batch B with sample j moves the parameters by
-(lr / |B|) grad l_j (j's part), which changes the validation loss by
-(lr / |B|) <grad L_val, grad l_j> to first order; leaving j out undoes that, so j's
part of one step is +(lr / |B|) <grad L_val, grad l_j> (Hara's per-step term with u
the validation gradient itself: no Hessian transports it). Positive: j's gradient
aligns with the validation gradient and removing j would raise the validation loss;
negative = harmful, this project's sign.

Each epoch visits j once. The checkpoint version takes that visit at the snapshot of
the start of the epoch, theta_e (``load_epoch_state(out, seed, e)``) and gives it the
epoch's mean learning rate eta_e and the nominal batch size B (the run's
``--batch-size``)::

    score_j = sum_{e in E} (eta_e / B) <grad L_val(theta_e), grad l_j(theta_e)>

with exactly this scaling (no 1/N; a positive constant would not change any ranking).
E is every epoch of the training (``--tracin-checkpoints all``, the default: TracIn's
authors sum over checkpoints spread across the whole training) or the influence
window's epochs only (``window``, the same steps the walks cover).
grad L_val is :meth:`GradientOps.val_gradient` (inference-mode BN with the snapshot's
running statistics); <., grad l_j> is :meth:`GradientOps.per_sample_dots` on j's input
as training saw it in that epoch (the recorded augmentation; per-sample BN statistics,
as the walks' per-sample terms), computed over the epoch's recorded batches.

``TracInSelf`` is TracIn's self-influence, the field's usual detector of mislabelled
samples: the same sum with j's own gradient in place of the validation gradient,
sum_e (eta_e / B) |grad l_j(theta_e)|^2. A sample the network keeps having to be pushed
towards (a wrong label, an outlier) has a large one. It is not an estimate of a change
of the validation loss; it is saved negated (-self-influence), so that, as with every
method, the most suspicious samples come first and are the ones removed.

Both run on an engine of their own, so the final engine other methods use is untouched.
Facts: ``checkpoints`` (the snapshots used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import settings, trajectory
from ..bars import progress_bar
from ..context import resolve_context_name
from ..settings import setting
from .base import Context, register
from .grads import GradientOps, one_blas_thread

CHECKPOINTS = ("all", "window")


def epoch_rates(record: trajectory.Record, steps) -> dict[int, float]:
    """Epoch -> the mean learning rate of its steps among ``steps``."""
    steps = np.asarray(list(steps), np.int64)
    epochs = record.epoch[steps]
    return {int(e): float(np.mean(record.lr[steps[epochs == e]])) for e in np.unique(epochs)}


@one_blas_thread
def tracin_scores(ops: GradientOps, record: trajectory.Record, steps, state_at,
                  batch_size: int, progress: str | None = None,
                  self_influence: bool = False) -> tuple[np.ndarray, dict]:
    """TracIn scores over the epochs of ``steps``; ``state_at(e)`` is the network state at
    the start of epoch e (it is loaded into ``ops``' network). ``self_influence``: the sum
    of (eta_e / B) |grad l_j|^2 instead (not negated)."""
    steps = list(steps)
    rates = epoch_rates(record, steps)
    scores = np.zeros(record.n_train, np.float64)
    for e in progress_bar(sorted(rates), desc=progress, shown=progress is not None, mininterval=1.0):
        ops.net.load_state_dict(state_at(e))
        g_val = None if self_influence else ops.val_gradient()
        weight = rates[e] / batch_size
        for s in (s for s in steps if int(record.epoch[s]) == e):
            idx, seeds = record.batch(s)
            x, y = ops.engine.train_inputs(idx, seeds)
            terms = ops.per_sample_sq_norms(x, y) if self_influence else ops.per_sample_dots(x, y, g_val)
            np.add.at(scores, idx, weight * terms)
    return scores, {"checkpoints": len(rates)}


@dataclass(frozen=True)
class TracInSettings:
    tracin_checkpoints: str = setting(
        "all", ["--tracin-checkpoints"],
        "TracIn, TracInSelf: the epoch-start snapshots summed over: all (every epoch of the "
        "training, as TracIn's authors run it) or window (the --infl-epochs window's only)",
        choices=CHECKPOINTS)


class TracIn:
    """Gradient alignment with the validation loss, summed over epoch snapshots."""

    name, color, needs = "TracIn", "tab:brown", "trajectory"
    Settings = TracInSettings
    self_influence = False

    def settings(self, cfg) -> dict:
        own = settings.identity(TracInSettings, cfg.options)
        return {**own, "infl_epochs": cfg.infl_epochs} if own["tracin_checkpoints"] == "window" else own

    def steps(self, ctx: Context) -> range:
        if settings.values(TracInSettings, ctx.cfg.options).tracin_checkpoints == "window":
            return ctx.window()
        record = ctx.record()
        return record.window(record.n_epochs)

    def scores(self, ctx: Context):
        ops = GradientOps(ctx.new_engine(), ctx.per_sample, resolve_context_name(ctx.cfg.context))
        scores, facts = tracin_scores(ops, ctx.record(), self.steps(ctx),
                                      lambda e: trajectory.load_epoch_state(ctx.out, ctx.seed, e),
                                      ctx.cfg.batch_size, progress=ctx.progress(f"influence {self.name}"),
                                      self_influence=self.self_influence)
        return (-scores if self.self_influence else scores), facts


class TracInSelf(TracIn):
    """TracIn's self-influence (negated: the largest first), a mislabel detector."""

    name, color = "TracInSelf", "tab:olive"
    self_influence = True


register(TracIn())
register(TracInSelf())
