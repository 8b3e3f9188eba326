"""Influence functions (Koh & Liang 2017) at the final parameters: the method ``IF``.

Removing training sample j from the mean training loss L(theta) = (1/N) sum_i l_i is
the perturbation L - (1/N) l_j. At a minimum theta_T (grad L = 0) the minimiser moves,
to first order, by +(1/N) H^-1 grad l_j, so the validation loss changes by::

    score_j = (1/N) <grad L_val(theta_T), H^-1 grad l_j(theta_T)>
            = (1/N) <v, grad l_j>,   (H + lambda I) v = grad L_val

which is this project's sign (negative = removing j lowers the validation loss =
harmful). ``lambda`` (``--if-damping``) damps H: a trained network is not at an exact
minimum and its H may be singular (softmax regression is invariant to adding one vector
to every class's weights) or indefinite. For a model that minimises
L + (lambda / 2) |theta|^2 the damped formula is the exact first-order influence of
that regularised objective.

The pieces:

* H is the Hessian of the mean loss over the whole training set at the final
  parameters, as :meth:`GradientOps.hvp` computes it: mini-batches of ``--batch-size``
  in index order, each batch's HVP weighted by its share |b| / N; BN uses the batch
  statistics of each mini-batch; inputs are not augmented
  (``engine.train_inputs(idx, None)``: the loss of the data set itself, while training
  with ``--augment`` minimised that of its augmented copies);
* grad L_val is :meth:`GradientOps.val_gradient` (inference-mode BN);
* <v, grad l_j> is :meth:`GradientOps.per_sample_dots` on the same un-augmented
  batches (per-sample BN statistics, as the walks' per-sample terms);
* v is solved by conjugate gradient in float64 over full-training-set HVPs (each the
  float32 network's mini-batch HVPs summed). For a positive semi-definite H (a convex
  loss such as softmax regression) H + lambda I is symmetric positive definite and CG
  is exact: it converges in at most as many iterations as H + lambda I has distinct
  eigenvalues, up to rounding; it stops at a residual of ``CG_TOL`` relative to
  |grad L_val| or after ``--if-cg-iters`` iterations. For a non-convex network H may be
  indefinite: CG stops (with a warning) at the first direction of non-positive
  curvature of H + lambda I. Each CG iteration is one pass of HVPs over the whole
  training set.

Facts: ``hvps`` (full-training-set HVPs: one per CG iteration, one more for the final
residual, and one for the direction of non-positive curvature CG stopped at, if any), ``cg_residual`` (|g - (H + lambda I) v| / |g| recomputed with that last
HVP, not the recursion's value that stops CG; the float32 HVPs put a floor of about
1e-6 to 1e-5 under it) and ``cg_iters``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .. import settings
from ..bars import progress_bar
from ..settings import at_least, positive, setting
from .base import Context, register
from .grads import GradientOps, hvp_mode, hvp_setting, one_blas_thread

logger = logging.getLogger(__name__)

CG_TOL = 1e-6  # relative residual at which CG stops


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def _unflat(vec: np.ndarray, like) -> list[np.ndarray]:
    out, off = [], 0
    for p in like:
        out.append(vec[off : off + p.size].reshape(p.shape).astype(np.float32))
        off += p.size
    return out


def training_batches(n: int, batch_size: int):
    """Index chunks of the whole training set, in order."""
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


class DampedHessian:
    """u -> (H + lambda I) u on flat float64 vectors, H the Hessian of the mean training
    loss over every training sample (un-augmented, mini-batches of ``batch_size``)."""

    def __init__(self, ops: GradientOps, damping: float, batch_size: int):
        self.ops, self.damping = ops, float(damping)
        self.batches = training_batches(ops.engine.data.n_train, batch_size)
        self.n = ops.engine.data.n_train
        self.calls = 0

    def __call__(self, u: np.ndarray) -> np.ndarray:
        self.calls += 1
        uu = _unflat(u, self.ops.params)
        out = self.damping * u
        for idx in self.batches:
            x, y = self.ops.engine.train_inputs(idx, None)
            out += (len(idx) / self.n) * flat(self.ops.hvp(x, y, uu))
        return out


@one_blas_thread
def conjugate_gradient(apply, b: np.ndarray, max_iters: int, tol: float = CG_TOL,
                       progress: str | None = None) -> tuple[np.ndarray, int, bool]:
    """Solve apply(x) = b (apply symmetric positive definite) from x = 0; returns
    (x, iterations, converged). Stops when the recursive residual |r| <= tol |b|
    (converged), after ``max_iters`` iterations, or at a direction of non-positive
    curvature (logged)."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = float(r @ r)
    target = tol * np.sqrt(float(b @ b))
    it = 0
    bar = progress_bar(total=max_iters, desc=progress, shown=progress is not None, mininterval=1.0)
    while it < max_iters and np.sqrt(rs) > target:
        ap = apply(p)
        curvature = float(p @ ap)
        if not curvature > 0:
            logger.warning("%sCG stopped after %d iterations: curvature %.3g along its search "
                           "direction (H + damping is not positive definite here; raise "
                           "--if-damping)", f"{progress}: " if progress else "", it, curvature)
            break
        alpha = rs / curvature
        x += alpha * p
        r -= alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
        bar.update(1)
    bar.close()
    return x, it, bool(np.sqrt(rs) <= target)


@one_blas_thread
def influence_scores(ops: GradientOps, damping: float, max_iters: int, batch_size: int,
                     tol: float = CG_TOL, progress: str | None = None) -> tuple[np.ndarray, dict]:
    """IF scores of every training sample at the network's current parameters."""
    data = ops.engine.data
    n = data.n_train
    g = flat(ops.val_gradient())
    a = DampedHessian(ops, damping, batch_size)
    v, iters, converged = conjugate_gradient(a, g, max_iters, tol, progress)
    g_norm = float(np.linalg.norm(g))
    residual = float(np.linalg.norm(g - a(v)) / g_norm) if g_norm > 0 else 0.0
    vv = _unflat(v, ops.params)
    scores = np.zeros(n, np.float64)
    for idx in a.batches:
        x, y = ops.engine.train_inputs(idx, None)
        scores[idx] = ops.per_sample_dots(x, y, vv) / n
    log = logger.info if converged else logger.warning
    log("%sCG: %d iterations, relative residual %.3g (%d HVPs over the training set)%s",
        f"{progress}: " if progress else "", iters, residual, a.calls,
        "" if converged else f"; not converged to {tol:g} (raise --if-cg-iters or --if-damping)")
    return scores, {"hvps": a.calls, "cg_residual": residual, "cg_iters": iters}


def damping_setting():
    """``--if-damping``, a setting of IF and IFSelf."""
    return setting(
        10.0, ["--if-damping"],
        "IF, IFSelf: damping lambda of the Hessian, (H + lambda I) v = grad L_val (a positive "
        "number; measured: smaller ones leave conjugate gradient at negative curvature on "
        "cifarnet and predict the mean validation loss of logreg worse, yet each test "
        "example's loss far better, 0.1 against 10: docs/results.md)", check=positive)


@dataclass(frozen=True)
class IFSettings:
    if_damping: float = damping_setting()
    if_cg_iters: int = setting(100, ["--if-cg-iters"], "IF: most conjugate-gradient iterations of the solve",
                               check=at_least(1))
    hvp: str = hvp_setting()


class FinalHessianMethod:
    """A method on the Hessian at the final parameters: its ``Settings`` key its results,
    with ``--hvp`` as it applies (``auto`` resolved by network)."""

    needs = "final"
    Settings: type

    def settings(self, cfg) -> dict:
        return {**settings.identity(self.Settings, cfg.options), "hvp": hvp_mode(cfg)}

    def own(self, cfg):
        """This method's settings of the run ``cfg``."""
        return settings.values(self.Settings, cfg.options)


class InfluenceFunction(FinalHessianMethod):
    """Koh & Liang's influence function at the final parameters (damped, solved by CG)."""

    name, color = "IF", "tab:orange"
    Settings = IFSettings

    def scores(self, ctx: Context):
        own = self.own(ctx.cfg)
        return influence_scores(ctx.ops(), own.if_damping, own.if_cg_iters, ctx.cfg.batch_size,
                                progress=ctx.progress("influence IF"))


register(InfluenceFunction())
