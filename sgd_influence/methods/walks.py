"""The two backward walks of SGD-influence over the recorded steps of a window.

Both start from the gradient of the validation loss at the final model and walk the
steps from the last to the first; ``params_at(s)``, when given, sets the parameters
before step s (Hara), otherwise the final parameters stand for every step (Ours).

:func:`walk_reference` (``--bn-influence reference``, and every network without BN)::

    infl_j += (lr_t / |B_t|) <u_{t+1}, grad l_j(theta_t)>   for every j in B_t
    u_t  = u_{t+1} - lr_t H_t u_{t+1}            H_t: Hessian of the mean batch loss

with per-sample BN statistics in the per-sample terms (the reference code's
one-sample-at-a-time gradients); ``--hvp-scaling reference`` divides the H u term by
|B_t| once more, as the reference code does.

:func:`walk_exact` (``--bn-influence exact``) differentiates the step with per-sample
weights w: its state is (u, a_r), from dL_val/dtheta and dL_val/dr at the final model
(r: the BN running statistics); per step one double backward of
S_t = -lr <u, grad_theta L_B> + (1 - d) <a_r, stat_B> gives u += dS/dtheta,
a_r <- d a_r and infl_j += -dS/dw_j. Without BN it is the walk above.

Each returns (scores, facts): ``u_growth`` (|u| at the end over |u| at the start) and
``window_steps``. The network holds the final state when called and again on return.
"""

from __future__ import annotations

import logging

import numpy as np

from ..bars import progress_bar
from ..trajectory import Record
from .grads import GradientOps, one_blas_thread

logger = logging.getLogger(__name__)

BN_INFLUENCE = ("exact", "reference")
U_GROWTH_WARN = 100.0


@one_blas_thread
def norm(u: list[np.ndarray]) -> float:
    """|u| over every array, in float64."""
    return float(np.sqrt(sum(np.dot(a.ravel().astype(np.float64), a.ravel()) for a in u)))


def _backwards(ops: GradientOps, record: Record, steps, params_at, progress):
    """The window's steps from the last to the first: (batch indices, inputs, labels,
    learning rate) with the network at the step's parameters (``params_at``) or the final
    ones; the final parameters are back in place when the walk is done."""
    final_flat = ops.net.get_flat()
    for s in progress_bar(list(steps)[::-1], desc=progress, shown=progress is not None, mininterval=1.0):
        if params_at is not None:
            ops.net.set_flat(params_at(s))
        idx, seeds = record.batch(s)
        x, y = ops.engine.train_inputs(idx, seeds)
        yield idx, x, y, float(record.lr[s])
    if params_at is not None:
        ops.net.set_flat(final_flat)


@one_blas_thread
def walk_reference(ops: GradientOps, record: Record, steps, params_at=None,
                   hvp_scaling: str = "correct", progress: str | None = None, start=None):
    steps = list(steps)
    u = ops.val_gradient() if start is None else [np.asarray(a, np.float32) for a in start]
    u0 = norm(u)
    infl = np.zeros(record.n_train, np.float64)
    for idx, x, y, lr in _backwards(ops, record, steps, params_at, progress):
        dots, hu = ops.step_terms(x, y, u)
        np.add.at(infl, idx, (lr / len(idx)) * dots)
        scale = lr / len(idx) if hvp_scaling == "reference" else lr
        u = [a - np.float32(scale) * h for a, h in zip(u, hu)]
    return infl, _facts(u0, u, len(steps), progress)


@one_blas_thread
def walk_exact(ops: GradientOps, record: Record, steps, params_at=None,
               hvp_scaling: str = "correct", progress: str | None = None, start=None):
    steps = list(steps)
    if start is None:
        u, a_r = ops.val_gradient_exact()
    elif ops.net.has_batchnorm():
        raise ValueError("walk: a starting vector of its own needs a network without batch "
                         "normalization (the exact walk also carries the running statistics' adjoint)")
    else:
        u, a_r = [np.asarray(a, np.float32) for a in start], []
    u0 = norm(u)
    infl = np.zeros(record.n_train, np.float64)
    for idx, x, y, lr in _backwards(ops, record, steps, params_at, progress):
        scale = 1.0 / len(idx) if hvp_scaling == "reference" else 1.0
        terms, du = ops.exact_step_terms(x, y, u, a_r, lr)
        np.add.at(infl, idx, terms)
        u = [a + np.float32(scale) * h for a, h in zip(u, du)]
        a_r = [np.float32(d) * a for d, a in zip(ops.net.bn_decays, a_r)]
    return infl, _facts(u0, u, len(steps), progress)


def walk(ops: GradientOps, record: Record, steps, params_at=None, hvp_scaling: str = "correct",
         progress: str | None = None, bn_influence: str = "exact", start=None):
    """The walk ``bn_influence`` names; (scores, facts). ``start``: the vector the walk
    carries back from the final parameters (one array per trainable parameter) instead of
    the gradient of the mean validation loss, e.g. one test example's loss gradient: the
    walk is linear in it, so per-example targets are one walk each."""
    if bn_influence not in BN_INFLUENCE:
        raise ValueError(f"--bn-influence: expected exact or reference, got {bn_influence!r}")
    fn = walk_exact if bn_influence == "exact" else walk_reference
    return fn(ops, record, steps, params_at, hvp_scaling, progress, start)


def _facts(u0: float, u, n_steps: int, progress: str | None) -> dict:
    growth = norm(u) / max(u0, 1e-30)
    log = logger.warning if growth > U_GROWTH_WARN else logger.info
    log("%s|u| changed by a factor %.3g over %d steps%s", f"{progress}: " if progress else "",
        growth, n_steps,
        " (lr * H has eigenvalues beyond 2: the linearised walk amplifies; scores are "
        "dominated by those directions)" if growth > U_GROWTH_WARN else "")
    return {"u_growth": float(growth), "window_steps": n_steps}
