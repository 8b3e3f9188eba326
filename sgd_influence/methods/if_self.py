"""Influence functions' self-influence through a low-rank Hessian: the method ``IFSelf``.

The self-influence of training sample j under influence functions is how much the
model's loss on j itself would rise if j were left out::

    self_j = (1/N) <grad l_j, (H + lambda I)^-1 grad l_j>

(H the Hessian of the mean training loss at the final parameters, lambda
``--if-damping``, as for ``IF``). Like TracIn's self-influence it flags samples the
model fits against the grain (wrong labels, outliers); it is the field's standard
influence-function detector of mislabelled samples. It is saved negated
(-self_j), so that the largest come first and are the ones removed.

Solving (H + lambda I) v = grad l_j for every j is one conjugate-gradient solve per
training sample (thousands of full-training-set passes each). Instead the curvature is
taken from ``--ifself-rank`` k steps of the Lanczos iteration on H (Schioppa et al. 2022
use the related Arnoldi iteration for the same purpose): starting from a vector drawn
with the trial's seed, k full-training-set HVPs give an orthonormal basis Q of the Krylov
space and the tridiagonal T = Q^T H Q, whose eigenpairs (theta_i, s_i) give the Ritz
vectors v_i = Q s_i: the directions of H's largest curvature, found first. With
c_i = <v_i, grad l_j>::

    self_j = (1/N) [ sum_i c_i^2 / (theta_i + lambda)  +  (|grad l_j|^2 - sum_i c_i^2) / lambda ]

that is, H is replaced by its projection Q T Q^T: exact on the Krylov space, zero on the
rest, where only the damping acts. When the Krylov space is all of H's range (k at
least the number of parameters, or H of low rank: the iteration stops early when a new
direction has no length left), the formula is the exact damped self-influence. A Ritz
value with theta_i + lambda <= 0 (negative curvature beyond the damping, possible on a
non-convex network) is left out of the sum: that direction is counted at 1 / lambda
like the complement, and ``facts["left_out"]`` counts them.

The pieces are IF's: H is the same mini-batch Hessian over the whole un-augmented
training set (BN batch statistics; :class:`~.influence_function.DampedHessian` with no
damping), grad l_j one backward per sample on its un-augmented input
(:meth:`GradientOps.each_sample_gradient`, per-sample BN statistics, as TracInSelf's).
The Lanczos vectors are reorthogonalised against every earlier one, twice, in float64.
Facts: ``hvps`` (full-training-set HVPs, the rank reached), ``top_curvature`` (the
largest Ritz value), ``left_out``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..bars import progress_bar
from ..settings import at_least, setting
from .base import Context, register
from .grads import GradientOps, hvp_setting, one_blas_thread
from .influence_function import (
    DampedHessian,
    FinalHessianMethod,
    damping_setting,
    flat,
    training_batches,
)

logger = logging.getLogger(__name__)

BREAKDOWN = 1e-10  # a new Lanczos direction shorter than this times |H q| ends the iteration


@one_blas_thread
def lanczos(apply, dim: int, rank: int, rng: np.random.Generator,
            progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ritz pairs of the symmetric operator ``apply`` on R^dim after ``rank`` Lanczos
    steps (fewer when the Krylov space is exhausted): (values ascending, vectors as the
    columns of a dim x m array)."""
    steps = min(rank, dim)
    Q = np.zeros((steps, dim))  # the Lanczos vectors, one a row
    q = rng.standard_normal(dim)
    Q[0] = q / np.linalg.norm(q)
    alphas, betas = [], []
    for i in progress_bar(range(steps), desc=progress, shown=progress is not None, mininterval=1.0):
        w = apply(Q[i])
        scale = np.linalg.norm(w)
        alphas.append(float(Q[i] @ w))
        for _ in range(2):  # full reorthogonalisation (covers the three-term recursion too)
            w -= Q[: i + 1].T @ (Q[: i + 1] @ w)
        beta = float(np.linalg.norm(w))
        if i + 1 == steps or beta <= BREAKDOWN * max(scale, 1e-300):
            break
        betas.append(beta)
        Q[i + 1] = w / beta
    m = len(alphas)
    T = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
    theta, S = np.linalg.eigh(T)
    return theta, Q[:m].T @ S


@one_blas_thread
def self_influence(ops: GradientOps, damping: float, rank: int, batch_size: int,
                   rng: np.random.Generator, progress: str | None = None) -> tuple[np.ndarray, dict]:
    """(1/N) <g_j, (Q T Q^T + lambda I)^-1 g_j> of every training sample j (not negated)."""
    n = ops.engine.data.n_train
    hessian = DampedHessian(ops, 0.0, batch_size)
    theta, V = lanczos(hessian, ops.net.num_trainable(), rank, rng, progress=progress and f"{progress} (Lanczos)")
    keep = theta + damping > 0
    theta, V = theta[keep], V[:, keep]
    out = np.zeros(n, np.float64)
    for idx in training_batches(n, batch_size):
        x, y = ops.engine.train_inputs(idx, None)
        for j, grads in zip(idx, ops.each_sample_gradient(x, y)):
            g = flat(grads)
            c = V.T @ g
            out[j] = (np.sum(c * c / (theta + damping)) + (g @ g - c @ c) / damping) / n
    facts = {"hvps": hessian.calls, "top_curvature": float(theta.max()) if len(theta) else 0.0,
             "left_out": int(np.count_nonzero(~keep))}
    logger.info("%sLanczos: %d steps (HVPs over the training set), largest curvature %.4g%s",
                f"{progress}: " if progress else "", hessian.calls, facts["top_curvature"],
                f", {facts['left_out']} direction(s) of curvature below -damping left out" if facts["left_out"] else "")
    return out, facts


@dataclass(frozen=True)
class IFSelfSettings:
    if_damping: float = damping_setting()
    ifself_rank: int = setting(
        20, ["--ifself-rank"],
        "IFSelf: Lanczos steps (full-training-set HVPs) that find the Hessian's directions of "
        "largest curvature; the rest of the space is damped by --if-damping alone",
        check=at_least(1))
    hvp: str = hvp_setting()


class IFSelf(FinalHessianMethod):
    """Influence functions' self-influence (negated: the largest first), a mislabel detector."""

    name, color = "IFSelf", "tab:pink"
    Settings = IFSelfSettings

    def scores(self, ctx: Context):
        own = self.own(ctx.cfg)
        scores, facts = self_influence(ctx.ops(), own.if_damping, own.ifself_rank, ctx.cfg.batch_size,
                                       np.random.default_rng(ctx.seed), progress=ctx.progress("influence IFSelf"))
        return -scores, facts


register(IFSelf())
