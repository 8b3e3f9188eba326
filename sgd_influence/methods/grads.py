"""The gradient operations every influence method is made of, on one network.

:class:`GradientOps` builds each graph once per (kind, batch size) and keeps it in one
cache; a graph's variables are named fields of :class:`Graph`, not positions:

* ``hvp``: H u, H the Hessian of the mean loss of a batch (BN batch statistics);
* ``per_sample_dots``: <u, grad l_i> for every sample of a batch (per-sample BN
  statistics), computed as ``per_sample`` says:

  - ``fused`` (networks without BN): one double backward of
    s = <u, grad (1/B) sum_i w_i l_i> with respect to the parameters and the per-sample
    weights w gives H u and every (1/B) <u, grad l_i> at the cost of one HVP;
  - ``loop`` (BN networks on the CPU): a batch-one forward/backward per sample (on one
    CPU core about the cost of one batched forward+backward);
  - ``weighted`` (BN networks on a GPU): the weighted-loss double backward on an
    instance-normalised copy of the batch, one batched pass instead of |B| small ones;

* ``exact_step_terms``: the exact-BN step of docs/DESIGN.md ("The exact batch-norm
  derivative"): one double backward of
  S = <c, grad_theta L_B(theta, w)> + sum_k <r_k, stat_k(theta, w)>;
* ``val_gradient`` / ``val_gradient_exact``: the gradient of the mean validation loss
  (inference-mode BN), the latter also with respect to the running statistics.

``hvp="diff"`` computes every second derivative above (H u, the fused and weighted
per-sample terms, the exact-BN step) without a second-order graph, as a central
difference of first-order gradients along the vector v it is contracted with: the
gradient of Phi = alpha sum_i w_i l_i / B (+ sum_k <r_k, stat_k>) with respect to theta
and w, at theta + eps v with alpha = c / (2 eps) and at theta - eps v with alpha =
-c / (2 eps), summed (:meth:`GradientOps._central`): two forward-backward passes per
operation, ``eps`` by :func:`diff_step`. The loop's per-sample terms and the validation
gradients are first-order and the same in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nnabla as nn
import nnabla.functions as F
import numpy as np
from threadpoolctl import threadpool_limits

from ..engine import EVAL_BATCH, Engine
from ..models import input_variables, sample_losses
from ..settings import setting

PER_SAMPLE_MODES = ("auto", "loop", "weighted", "fused")
HVP_MODES = ("exact", "diff")
# the networks on which the difference walk was measured to lose nothing against the double
# backward (docs/results.md: leave-one-out tau and LDS the same to two decimals): the
# smooth cifarnet and softmax regression. Anything else (ReLU or max pooling, a network of
# yours, an .nnp or ONNX file) keeps the double backward under --hvp auto.
DIFF_NETWORKS = ("cifarnet (smooth)", "logreg")


def hvp_setting():
    """``--hvp``, a setting of every method that takes second derivatives (Hara, Ours, IF)."""
    return setting(
        "auto", ["--hvp"],
        "second derivatives of Hara, Ours and IF: 'exact' by nnabla's double backward (an "
        "influence step about 5.4 training steps); 'diff' by central differences of first-order "
        "gradients (about 2.2; the same fidelity on smooth networks, far worse on networks "
        "with ReLU or max pooling: docs/results.md); 'auto': diff on the networks where it was "
        "measured to lose nothing (the smooth cifarnet, logreg), exact on every other",
        choices=("auto", *HVP_MODES))


def hvp_mode(cfg) -> str:
    """--hvp as it applies to ``cfg``'s network: 'exact' or 'diff' ('auto' resolved)."""
    if cfg.hvp != "auto":
        return cfg.hvp
    name = "cifarnet (smooth)" if cfg.smooth_net() else cfg.builtin_network()
    return "diff" if name in DIFF_NETWORKS else "exact"


# The step of the central differences. D(eps) = (g(theta + eps v) - g(theta - eps v)) / (2 eps)
# of a gradient g differs from g's derivative along v by truncation, eps^2 |v|^3 T / 6 (T a
# third derivative of the loss along v), and by rounding, about u |g| / eps (u: float32's
# machine epsilon, the relative rounding of g's evaluations; rounding theta +- eps v to
# float32 adds an error of the same order). With h = eps |v| the length of the perturbation and L the length over
# which the loss's curvature changes, the error relative to |H v| is about A (h / L)^2 +
# B u / (h / L) (A, B of order one), smallest near h / L = u^(1/3), where both terms are
# about u^(2/3) (~2e-5 for float32). For a network L scales with its parameters, L =
# kappa |theta|: eps = kappa u^(1/3) max(|theta|, 1) / |v| (the 1 keeps a perturbation at
# parameters near zero). kappa = DIFF_SCALE was measured (docs/results.md, relative error
# of H v and of the exact-BN step against double backward for kappa 0.03 to 0.3): 0.1 is
# within a factor 2 of the best on the smooth cifarnet (optimum 0.05-0.1: softplus with
# beta 5 and batch normalisation curve on a tenth of |theta|) and on logreg (optimum
# 0.2-0.3, where its errors are 50 times smaller anyway).
DIFF_U = float(np.finfo(np.float32).eps)  # 2^-23
DIFF_SCALE = 0.1


def diff_step(theta_norm: float, v_norm: float) -> float:
    """eps of the central difference along v at parameters of norm |theta| (see above);
    1 for v = 0 (no perturbation, and a zero difference with any eps)."""
    if not v_norm > 0:
        return 1.0
    return DIFF_SCALE * DIFF_U ** (1.0 / 3.0) * max(theta_norm, 1.0) / v_norm

# One BLAS thread around every score computation: a dot product of more than some 20k
# values is summed in another order by two OpenBLAS threads than by one, so its last bits
# (and a score's) would depend on the thread count of the process computing it (the
# phase, the Python API, a test). Every walk and method runs under this decorator.
one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def choose_per_sample(has_bn: bool, context: str) -> str:
    """The cheapest exact per-sample path for the network and the nnabla context."""
    if not has_bn:
        return "fused"
    return "weighted" if context == "cudnn" else "loop"


@dataclass
class Graph:
    """One built graph: its inputs, the vectors it is contracted with, its outputs."""

    x: nn.Variable
    t: nn.Variable
    w: nn.Variable | None = None  # per-sample weights (weighted graphs)
    vs: list = field(default_factory=list)  # one vector variable per trainable parameter
    rs: list = field(default_factory=list)  # one per BN statistic (exact graphs)
    outs: list = field(default_factory=list)  # d/dtheta (and d/dw last, when weighted)
    run: nn.Variable | None = None  # what to forward (a sink, or the loss)
    coef: nn.Variable | None = None  # alpha of the central differences' graphs, (B, 1)

    def feed(self, x, y) -> None:
        self.x.d, self.t.d = x, y
        if self.w is not None:
            self.w.d = 1.0


def _set_vector(vs, u) -> None:
    for v, a in zip(vs, u):
        v.d = a


def _norm(arrays) -> float:
    return float(np.sqrt(dot(arrays, arrays)))


def dot(gs, u) -> float:
    """<g, u> summed over parameter arrays, in float64."""
    return float(sum(np.dot(g.ravel().astype(np.float64), a.ravel().astype(np.float64))
                     for g, a in zip(gs, u)))


class GradientOps:
    """Graphs (built once per kind and batch size) on one engine's network."""

    def __init__(self, engine: Engine, per_sample: str = "auto", context: str = "cpu",
                 hvp: str = "exact"):
        if per_sample not in PER_SAMPLE_MODES:
            raise ValueError(f"per-sample mode: expected one of {PER_SAMPLE_MODES}, got {per_sample!r}")
        if hvp not in HVP_MODES:
            raise ValueError(f"--hvp: expected exact or diff, got {hvp!r}")
        self.diff = hvp == "diff"
        self.engine = engine
        self.net = engine.net
        self.params = list(self.net.trainable.values())
        has_bn = self.net.has_batchnorm()
        if per_sample == "auto":
            per_sample = choose_per_sample(has_bn, context)
        if per_sample == "fused" and has_bn:
            raise ValueError("per-sample mode 'fused' needs a network without batch normalisation")
        self.per_sample = per_sample
        self._graphs: dict[tuple[str, int], Graph] = {}
        self._running: dict[str, nn.Variable] = {
            k: nn.Variable(self.net.variables[k].shape, need_grad=True) for k in self.net.bn_state_names()}

    def graph(self, kind: str, bs: int) -> Graph:
        key = (kind, bs)
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = getattr(self, f"_build_{kind}")(bs)
        return g

    # ------------------------------------------------------------------ graphs
    def _double_backward(self, bs: int, bn: str, weighted: bool) -> Graph:
        """s = <u, grad_theta mean_i(w_i l_i)>; outputs d s / d theta (= H u) and, when
        weighted, d s / d w."""
        x, t = input_variables(bs, self.engine.data.in_shape)
        losses = sample_losses(self.net.logits(x, bn=bn), t)
        w = None
        if weighted:
            w = nn.Variable((bs, 1), need_grad=True)
            w.d = 1.0
            loss = F.sum(losses * w) / bs
        else:
            loss = F.mean(losses)
        grads = nn.grad([loss], self.params)
        vs = [nn.Variable(p.shape, need_grad=False) for p in self.params]
        s = F.add_n(*[F.sum(g * v) for g, v in zip(grads, vs)]) if len(vs) > 1 else F.sum(grads[0] * vs[0])
        outs = nn.grad([s], self.params + ([w] if weighted else []))
        for o in outs:
            o.persistent = True
        return Graph(x, t, w, vs, [], outs, F.sink(*outs))

    def _build_hvp(self, bs: int) -> Graph:
        return self._double_backward(bs, "batch" if self.net.has_batchnorm() else "train", False)

    def _build_fused(self, bs: int) -> Graph:
        return self._double_backward(bs, "train", True)

    def _build_weighted(self, bs: int) -> Graph:
        return self._double_backward(bs, "instance", True)

    def _build_one(self, bs: int) -> Graph:
        x, t = input_variables(bs, self.engine.data.in_shape)
        bn = "batch" if self.net.has_batchnorm() else "train"
        return Graph(x, t, run=F.mean(sample_losses(self.net.logits(x, bn=bn), t)))

    def _build_exact(self, bs: int) -> Graph:
        """S = <c, grad_theta L_B(theta, w)> + sum_k <r_k, stat_k(theta, w)>.

        L_B = sum_i w_i l_i / bs with BN batch statistics weighted by w; stat_k are the
        (mean, unbiased variance) the running statistics move toward. The walk puts
        c = -lr a_theta and r_k = (1 - d) a_r,k into the vector variables; the outputs are
        dS/dtheta (the adjoint's increment) and dS/dw (minus the per-sample terms)."""
        x, t = input_variables(bs, self.engine.data.in_shape)
        w = nn.Variable((bs, 1), need_grad=True)
        w.d = 1.0
        stats: list = []
        if self.net.has_batchnorm():
            logits = self.net.logits(x, bn="weighted", w=w, stats=stats)
        else:
            logits = self.net.logits(x, bn="train")
        loss = F.sum(sample_losses(logits, t) * w) / bs
        grads = nn.grad([loss], self.params)
        vs = [nn.Variable(p.shape, need_grad=False) for p in self.params]
        stat_vars = [v for pair in stats for v in pair]
        rs = [nn.Variable(v.shape, need_grad=False) for v in stat_vars]
        terms = [F.sum(a * b) for a, b in zip(grads + stat_vars, vs + rs)]
        s = F.add_n(*terms) if len(terms) > 1 else terms[0]
        outs = nn.grad([s], self.params + [w])
        for o in outs:
            o.persistent = True
        return Graph(x, t, w, vs, rs, outs, F.sink(*outs))

    def _first_order(self, bs: int, bn: str, stats: bool = True) -> Graph:
        """Phi = sum_i coef_i w_i l_i / bs + sum_k <r_k, stat_k> (the statistics' terms with
        bn='weighted' only); its gradients with respect to theta and w are read from the
        parameters' and w's grad after a backward pass (the central differences)."""
        x, t = input_variables(bs, self.engine.data.in_shape)
        w = nn.Variable((bs, 1), need_grad=True)
        w.d = 1.0
        coef = nn.Variable((bs, 1), need_grad=False)
        stat_list: list | None = [] if stats else None
        if bn == "weighted":
            logits = self.net.logits(x, bn="weighted", w=w, stats=stat_list, lean=True)
        else:
            logits = self.net.logits(x, bn=bn)
        phi = F.sum(sample_losses(logits, t) * w * coef) / bs
        stat_vars = [v for pair in stat_list or [] for v in pair]
        rs = [nn.Variable(v.shape, need_grad=False) for v in stat_vars]
        terms = [phi] + [F.sum(a * b) for a, b in zip(stat_vars, rs)]
        return Graph(x, t, w, [], rs, [], F.add_n(*terms) if len(terms) > 1 else phi, coef)

    def _build_diff_batch(self, bs: int) -> Graph:
        """H u by differences (BN batch statistics, the lean batch norm without its
        statistics' terms), and without BN the fused per-sample terms too."""
        if self.net.has_batchnorm():
            return self._first_order(bs, "weighted", stats=False)
        return self._first_order(bs, "train")

    def _build_diff_instance(self, bs: int) -> Graph:
        return self._first_order(bs, "instance")

    def _build_diff_weighted(self, bs: int) -> Graph:
        """The exact-BN step by differences (without BN: the graph of diff_batch)."""
        if not self.net.has_batchnorm():
            return self.graph("diff_batch", bs)
        return self._first_order(bs, "weighted")

    def _central(self, kind: str, x, y, v, c: float, rs=()) -> tuple[list[np.ndarray], np.ndarray]:
        """(dPhi/dtheta, dPhi/dw) of graph ``kind`` summed over theta + eps v with alpha =
        c / (2 eps) and theta - eps v with alpha = -c / (2 eps), each r_k set to rs_k / 2:
        c times the derivative along v of grad_theta L_B and grad_w L_B (central
        differences, error O(eps^2)), plus the gradients of sum_k <rs_k, stat_k> (their
        mean over the two points, also O(eps^2) from theta's). The parameters are restored
        bit for bit."""
        g = self.graph(kind, len(y))
        g.feed(x, y)
        for r_var, r in zip(g.rs, rs or [0.0] * len(g.rs)):
            r_var.d = np.float32(0.5) * r
        base = [p.d.copy() for p in self.params]
        eps = diff_step(_norm(base), _norm(v))
        d_theta = [np.zeros(p.shape, np.float64) for p in self.params]
        d_w = np.zeros(len(y), np.float64)
        try:
            for sign in (1.0, -1.0):
                step = np.float32(sign * eps)
                for p, b, a in zip(self.params, base, v):
                    p.d = b + step * a
                g.coef.d = sign * c / (2.0 * eps)
                g.run.forward(clear_no_need_grad=True)
                for p in self.params:
                    p.grad.zero()
                g.w.grad.zero()
                g.run.backward(clear_buffer=True)
                for acc, p in zip(d_theta, self.params):
                    acc += p.g
                d_w += g.w.g[:, 0]
        finally:
            for p, b in zip(self.params, base):
                p.d = b
        return [a.astype(np.float32) for a in d_theta], d_w

    def _build_val(self, bs: int) -> Graph:
        return self._val_graph(bs, None)

    def _build_val_exact(self, bs: int) -> Graph:
        return self._val_graph(bs, self._running or None)

    def _val_graph(self, bs: int, running) -> Graph:
        x, t = input_variables(bs, self.engine.data.in_shape)
        logits = self.net.logits(x, bn="eval", running=running)
        return Graph(x, t, run=F.sum(F.softmax_cross_entropy(logits, t)))

    # ------------------------------------------------------------------ operations
    def hvp(self, x: np.ndarray, y: np.ndarray, u: list[np.ndarray]) -> list[np.ndarray]:
        """H u, H the Hessian of the mean loss of the batch (BN batch statistics)."""
        if self.diff:
            return self._central("diff_batch", x, y, u, 1.0)[0]
        g = self.graph("hvp", len(y))
        g.feed(x, y)
        _set_vector(g.vs, u)
        g.run.forward(clear_no_need_grad=True)
        return [o.d.copy() for o in g.outs]

    def per_sample_dots(self, x: np.ndarray, y: np.ndarray, u: list[np.ndarray],
                        mode: str | None = None) -> np.ndarray:
        """<u, grad l_i> for every sample of the batch (per-sample BN statistics)."""
        mode = mode or self.per_sample
        if mode == "loop":
            return np.array([dot(grads, u) for grads in self.each_sample_gradient(x, y)])
        if self.diff:
            kind = "diff_batch" if mode == "fused" else "diff_instance"
            return self._central(kind, x, y, u, 1.0)[1] * len(y)
        g = self.graph("fused" if mode == "fused" else "weighted", len(y))
        g.feed(x, y)
        _set_vector(g.vs, u)
        g.run.forward(clear_no_need_grad=True)
        return g.outs[-1].d[:, 0].astype(np.float64) * len(y)

    def per_sample_sq_norms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|grad l_i|^2 for every sample of the batch (per-sample BN statistics)."""
        return np.array([dot(grads, grads) for grads in self.each_sample_gradient(x, y)])

    def each_sample_gradient(self, x: np.ndarray, y: np.ndarray):
        """grad l_i (one array per trainable parameter, valid until the next one) for each
        sample of the batch: one backward per sample."""
        g = self.graph("one", 1)
        for i in range(len(y)):
            g.feed(x[i : i + 1], y[i : i + 1])
            g.run.forward(clear_no_need_grad=True)
            for p in self.params:
                p.grad.zero()
            g.run.backward(clear_buffer=True)
            yield [p.g for p in self.params]

    def step_terms(self, x, y, u) -> tuple[np.ndarray, list[np.ndarray]]:
        """(per-sample dots, H u) of one step, sharing work where the network allows."""
        if self.per_sample == "fused" and self.diff:
            hu, dw = self._central("diff_batch", x, y, u, 1.0)
            return dw * len(y), hu
        if self.per_sample == "fused":
            g = self.graph("fused", len(y))
            g.feed(x, y)
            _set_vector(g.vs, u)
            g.run.forward(clear_no_need_grad=True)
            hu = [o.d.copy() for o in g.outs[:-1]]
            return g.outs[-1].d[:, 0].astype(np.float64) * len(y), hu
        return self.per_sample_dots(x, y, u), self.hvp(x, y, u)

    def exact_step_terms(self, x, y, a_theta, a_r, lr: float):
        """(-dS/dw, dS/dtheta) of one step for the adjoints (a_theta, a_r)."""
        if self.diff:
            rs = [np.float32(1 - d) * a for d, a in zip(self.net.bn_decays, a_r)]
            d_theta, d_w = self._central("diff_weighted", x, y, a_theta, -lr, rs)
            return -d_w, d_theta
        g = self.graph("exact", len(y))
        g.feed(x, y)
        _set_vector(g.vs, [np.float32(-lr) * a for a in a_theta])
        _set_vector(g.rs, [np.float32(1 - d) * a for d, a in zip(self.net.bn_decays, a_r)])
        g.run.forward(clear_no_need_grad=True)
        return -g.outs[-1].d[:, 0].astype(np.float64), [o.d.copy() for o in g.outs[:-1]]

    def val_gradient(self) -> list[np.ndarray]:
        """Gradient of the mean validation loss at the current parameters (inference BN)."""
        self._accumulate_val_gradient("val")
        return [p.g.copy() for p in self.params]

    def val_gradient_exact(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """dL_val/dtheta and dL_val/dr (running statistics, in bn_state_names order) at
        the current state, inference-mode BN."""
        for name, v in self._running.items():
            v.d = self.net.variables[name].d
            v.grad.zero()
        self._accumulate_val_gradient("val_exact")
        return [p.g.copy() for p in self.params], [v.g.copy() for v in self._running.values()]

    def _accumulate_val_gradient(self, kind: str) -> None:
        """Zero the parameter gradients, then accumulate into them (and into the running
        statistics' variables for 'val_exact') the gradient of the mean validation loss."""
        d = self.engine.data
        n = len(d.val_y)
        for p in self.params:
            p.grad.zero()
        for start in range(0, n, EVAL_BATCH):
            yb = d.val_y[start : start + EVAL_BATCH]
            g = self.graph(kind, len(yb))
            g.x.d = self.engine.inputs(d.val_x[start : start + EVAL_BATCH])
            g.t.d = yb[:, None]
            g.run.forward(clear_no_need_grad=True)
            g.run.backward(1.0 / n, clear_buffer=True)
