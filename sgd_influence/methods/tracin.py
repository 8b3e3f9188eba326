"""TracIn, checkpoint version (Pruthi et al. 2020): the method ``TracIn``.

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

    score_j = sum_{e in window epochs} (eta_e / B) <grad L_val(theta_e), grad l_j(theta_e)>

with exactly this scaling (no 1/N; a positive constant would not change any ranking).
grad L_val is :meth:`GradientOps.val_gradient` (inference-mode BN with the snapshot's
running statistics); <., grad l_j> is :meth:`GradientOps.per_sample_dots` on j's input
as training saw it in that epoch (the recorded augmentation; per-sample BN statistics,
as the walks' per-sample terms), computed over the epoch's recorded batches.

It runs on an engine of its own, so the final engine other methods use is untouched.
Facts: ``checkpoints`` (the snapshots used: one per window epoch).
"""

from __future__ import annotations

import numpy as np

from .. import trajectory
from ..bars import progress_bar
from .base import Context, register
from .grads import GradientOps, one_blas_thread


def epoch_rates(record: trajectory.Record, steps) -> dict[int, float]:
    """Epoch -> the mean learning rate of its steps among ``steps``."""
    steps = np.asarray(list(steps), np.int64)
    epochs = record.epoch[steps]
    return {int(e): float(np.mean(record.lr[steps[epochs == e]])) for e in np.unique(epochs)}


@one_blas_thread
def tracin_scores(ops: GradientOps, record: trajectory.Record, steps, state_at,
                  batch_size: int, progress: str | None = None) -> tuple[np.ndarray, dict]:
    """TracIn scores over the epochs of ``steps``; ``state_at(e)`` is the network state at
    the start of epoch e (it is loaded into ``ops``' network)."""
    steps = list(steps)
    rates = epoch_rates(record, steps)
    scores = np.zeros(record.n_train, np.float64)
    for e in progress_bar(sorted(rates), desc=progress, shown=progress is not None, mininterval=1.0):
        ops.net.load_state_dict(state_at(e))
        g_val = ops.val_gradient()
        weight = rates[e] / batch_size
        for s in (s for s in steps if int(record.epoch[s]) == e):
            idx, seeds = record.batch(s)
            x, y = ops.engine.train_inputs(idx, seeds)
            np.add.at(scores, idx, weight * ops.per_sample_dots(x, y, g_val))
    return scores, {"checkpoints": len(rates)}


class TracIn:
    """Gradient alignment with the validation loss, summed over the window's epoch snapshots."""

    name, color, needs = "TracIn", "tab:brown", "trajectory"

    def settings(self, cfg) -> dict:
        return {"infl_epochs": cfg.infl_epochs}

    def scores(self, ctx: Context):
        from ..context import resolve_context_name

        ops = GradientOps(ctx.new_engine(), ctx.per_sample, resolve_context_name(ctx.cfg.context))
        return tracin_scores(ops, ctx.record(), ctx.window(),
                             lambda e: trajectory.load_epoch_state(ctx.out, ctx.seed, e),
                             ctx.cfg.batch_size, progress=ctx.progress("influence TracIn"))


register(TracIn())
