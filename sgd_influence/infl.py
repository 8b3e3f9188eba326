"""Influence phase: SGD-influence (Hara et al. 2019) and the last-weight approximation.

For the recorded SGD steps of the influence window, walked backwards from the last::

    u_T  = grad L_val(theta_T)                   mean over validation, inference-mode BN
    infl_j += (lr_t / |B_t|) <u_{t+1}, grad l_j(theta_t)>   for every j in B_t
    u_t  = u_{t+1} - lr_t H_t u_{t+1}            H_t: Hessian of the mean batch loss

``infl_j`` estimates L_val(without j) - L_val: negative = removing j lowers the
validation loss = j is harmful. Methods:

* ``Hara``: theta_t is the real parameter vector before step t (the every-step cache).
* ``Ours``: theta_t = theta_T everywhere (only the final parameters are needed).
* ``Random``: the training samples in a seeded random order (a control).

``--hvp-scaling reference`` divides the H u term by |B_t| once more, as the reference
code does; the default is the update above.

Batch normalisation: the per-sample terms use per-sample statistics (the reference's
one-sample-at-a-time gradients in training mode); H_t u uses the batch statistics; the
running statistics are never changed.

How the per-sample terms are computed (``per_sample``):

* ``fused`` (networks without BN): one double backward of s = <u, grad (1/B) sum_i w_i l_i>
  with respect to the parameters and the per-sample weights w gives H u and every
  (1/B) <u, grad l_i> at the cost of one Hessian-vector product.
* ``loop`` (BN networks on the CPU): a batch-one forward/backward per sample. On a
  single CPU core this costs about one batched forward+backward.
* ``weighted`` (BN networks on a GPU): the weighted-loss double backward on an
  instance-normalised copy of the batch; one batched pass instead of |B| small ones.

Output ``influence/{method}/influence_{seed}.csv`` with the columns
``x:image,y:label,influence,datasource_index``, sorted by influence ascending.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import checks, fileio, paths, preprocess
from . import config as C
from .engine import Engine, Prepared, model_spec
from .models import input_variables
from .trajectory import Record, load_snapshot

logger = logging.getLogger(__name__)

PER_SAMPLE_MODES = ("auto", "loop", "weighted", "fused")
U_GROWTH_WARN = 100.0
VAL_BATCH = 250


def _norm(u: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.dot(a.ravel().astype(np.float64), a.ravel()) for a in u)))


def choose_per_sample(has_bn: bool, context: str) -> str:
    """The cheapest exact per-sample path for the network and the nnabla context."""
    if not has_bn:
        return "fused"
    return "weighted" if context == "cudnn" else "loop"


class InfluenceComputer:
    """Graphs (built once per batch size) and the backward walk for one trial."""

    def __init__(self, engine: Engine, per_sample: str = "auto", context: str = "cpu"):
        if per_sample not in PER_SAMPLE_MODES:
            raise ValueError(f"per-sample mode: expected one of {PER_SAMPLE_MODES}, got {per_sample!r}")
        self.engine = engine
        self.net = engine.net
        self.params = list(self.net.trainable.values())
        has_bn = self.net.has_batchnorm()
        if per_sample == "auto":
            per_sample = choose_per_sample(has_bn, context)
        if per_sample == "fused" and has_bn:
            raise ValueError("per-sample mode 'fused' needs a network without batch normalisation")
        self.per_sample = per_sample
        self._hvp: dict[int, tuple] = {}
        self._fused: dict[int, tuple] = {}
        self._weighted: dict[int, tuple] = {}
        self._one: tuple | None = None
        self._val: dict[int, tuple] = {}

    # ------------------------------------------------------------------ vectors
    def _set_vector(self, vs, u: list[np.ndarray]) -> None:
        for v, a in zip(vs, u):
            v.d = a

    @staticmethod
    def _dot(gs, u: list[np.ndarray]) -> float:
        return float(sum(np.dot(g.ravel().astype(np.float64), a.ravel().astype(np.float64))
                         for g, a in zip(gs, u)))

    # ------------------------------------------------------------------ graphs
    def _double_backward_graph(self, bs: int, bn: str, weighted: bool):
        """s = <u, grad_theta mean_i(w_i l_i)>; returns (x, t, w, vs, outputs).

        outputs = d s / d theta (= H u) and, when weighted, d s / d w."""
        x, t = input_variables(bs, self.engine.data.in_shape)
        logits = self.net.logits(x, bn=bn)
        losses = F.softmax_cross_entropy(logits, t)
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
        wrt = self.params + ([w] if weighted else [])
        outs = nn.grad([s], wrt)
        for o in outs:
            o.persistent = True
        sink = F.sink(*outs)
        return x, t, w, vs, outs, sink

    def hvp_graph(self, bs: int):
        g = self._hvp.get(bs)
        if g is None:
            bn = "batch" if self.net.has_batchnorm() else "train"
            g = self._hvp[bs] = self._double_backward_graph(bs, bn, weighted=False)
        return g

    def _fused_graph(self, bs: int):
        g = self._fused.get(bs)
        if g is None:
            g = self._fused[bs] = self._double_backward_graph(bs, "train", weighted=True)
        return g

    def _weighted_graph(self, bs: int):
        g = self._weighted.get(bs)
        if g is None:
            g = self._weighted[bs] = self._double_backward_graph(bs, "instance", weighted=True)
        return g

    def _one_graph(self):
        if self._one is None:
            x, t = input_variables(1, self.engine.data.in_shape)
            bn = "batch" if self.net.has_batchnorm() else "train"
            loss = F.mean(F.softmax_cross_entropy(self.net.logits(x, bn=bn), t))
            self._one = (x, t, loss)
        return self._one

    # ------------------------------------------------------------------ pieces
    def hvp(self, x: np.ndarray, y: np.ndarray, u: list[np.ndarray]) -> list[np.ndarray]:
        """H u, H the Hessian of the mean loss of the batch (BN batch statistics)."""
        xv, tv, _, vs, outs, sink = self.hvp_graph(len(y))
        xv.d, tv.d = x, y
        self._set_vector(vs, u)
        sink.forward(clear_no_need_grad=True)
        return [o.d.copy() for o in outs]

    def per_sample_dots(self, x: np.ndarray, y: np.ndarray, u: list[np.ndarray],
                        mode: str | None = None) -> np.ndarray:
        """<u, grad l_i> for every sample of the batch (per-sample BN statistics)."""
        mode = mode or self.per_sample
        if mode == "loop":
            xv, tv, loss = self._one_graph()
            out = np.empty(len(y))
            for i in range(len(y)):
                xv.d, tv.d = x[i : i + 1], y[i : i + 1]
                loss.forward(clear_no_need_grad=True)
                for p in self.params:
                    p.grad.zero()
                loss.backward(clear_buffer=True)
                out[i] = self._dot([p.g for p in self.params], u)
            return out
        graph = self._fused_graph(len(y)) if mode == "fused" else self._weighted_graph(len(y))
        xv, tv, w, vs, outs, sink = graph
        xv.d, tv.d = x, y
        w.d = 1.0
        self._set_vector(vs, u)
        sink.forward(clear_no_need_grad=True)
        return outs[-1].d[:, 0].astype(np.float64) * len(y)

    def step_terms(self, x, y, u):
        """(per-sample dots, H u) of one step, sharing work where the network allows."""
        if self.per_sample == "fused":
            xv, tv, w, vs, outs, sink = self._fused_graph(len(y))
            xv.d, tv.d = x, y
            w.d = 1.0
            self._set_vector(vs, u)
            sink.forward(clear_no_need_grad=True)
            hu = [o.d.copy() for o in outs[:-1]]
            return outs[-1].d[:, 0].astype(np.float64) * len(y), hu
        return self.per_sample_dots(x, y, u), self.hvp(x, y, u)

    def val_gradient(self) -> list[np.ndarray]:
        """Gradient of the mean validation loss at the current parameters (inference BN)."""
        d = self.engine.data
        n = len(d.val_y)
        for p in self.params:
            p.grad.zero()
        for start in range(0, n, VAL_BATCH):
            yb = d.val_y[start : start + VAL_BATCH]
            g = self._val.get(len(yb))
            if g is None:
                x, t = input_variables(len(yb), d.in_shape)
                loss = F.sum(F.softmax_cross_entropy(self.net.logits(x, bn="eval"), t))
                g = self._val[len(yb)] = (x, t, loss)
            x, t, loss = g
            x.d = preprocess.normalize(d.val_x[start : start + VAL_BATCH])
            t.d = yb[:, None]
            loss.forward(clear_no_need_grad=True)
            loss.backward(1.0 / n, clear_buffer=True)  # accumulates into the parameter grads
        return [p.g.copy() for p in self.params]

    # ------------------------------------------------------------------ the walk
    def influence(self, record: Record, steps, params_at=None, hvp_scaling: str = "correct",
                  progress: str | None = None) -> np.ndarray:
        """Walk ``steps`` backwards; returns infl over the training samples.

        The network must hold the final parameters when called. ``params_at(s)``, when
        given, returns the flat trainable parameters before step s (Hara); without it the
        final parameters are used everywhere (Ours)."""
        u = self.val_gradient()
        u_norm0 = _norm(u)
        final_flat = self.net.get_flat()
        infl = np.zeros(record.n_train, np.float64)
        steps = list(steps)
        for s in tqdm(steps[::-1], desc=progress, disable=progress is None, mininterval=1.0):
            if params_at is not None:
                self.net.set_flat(params_at(s))
            idx, seeds = record.batch(s)
            x, y = self.engine.train_inputs(idx, seeds)
            lr, bs = float(record.lr[s]), len(idx)
            dots, hu = self.step_terms(x, y, u)
            np.add.at(infl, idx, (lr / bs) * dots)
            scale = lr / bs if hvp_scaling == "reference" else lr
            u = [a - np.float32(scale) * h for a, h in zip(u, hu)]
        if params_at is not None:
            self.net.set_flat(final_flat)
        growth = _norm(u) / max(u_norm0, 1e-30)
        self.last_u_growth = growth
        log = logger.warning if growth > U_GROWTH_WARN else logger.info
        log("%s|u| changed by a factor %.3g over %d steps%s", f"{progress}: " if progress else "",
            growth, len(steps),
            " (lr * H has eigenvalues beyond 2: the linearised walk amplifies; scores are "
            "dominated by those directions)" if growth > U_GROWTH_WARN else "")
        return infl


# --------------------------------------------------------------------------- files
def influence_frame(data: Prepared, scores: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({
        "x:image": list(data.train_paths),
        "y:label": data.train_y,
        "influence": scores,
        "datasource_index": data.train_rows,
    })
    return df.sort_values("influence", kind="mergesort").reset_index(drop=True)


def read_influence(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: influence file not found (run the influence phase first)")
    df = pd.read_csv(path)
    expected = ["x:image", "y:label", "influence", "datasource_index"]
    if list(df.columns[:4]) != expected:
        raise ValueError(f"{path}: expected columns {','.join(expected)}, got {','.join(df.columns)}")
    return df


def random_scores(n: int, seed: int) -> np.ndarray:
    """Seeded uniform scores: sorted, they put the samples in a random order."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D])).random(n)


def compute_scores(cfg: C.Config, seed: int, method: str, data: Prepared,
                   per_sample: str = "auto") -> np.ndarray:
    if method == "Random":
        return random_scores(data.n_train, seed)
    out = Path(cfg.output)
    record = Record.load(paths.record(out, seed))
    engine = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    engine.net.load_state_dict(load_snapshot(paths.snapshot(out, seed, "final")))
    from .context import resolve_context_name

    comp = InfluenceComputer(engine, per_sample, resolve_context_name(cfg.context))
    params_at = None
    if method == "Hara":
        cache_path = paths.window_params(out, seed)
        if not cache_path.exists():
            raise FileNotFoundError(
                f"{cache_path}: Hara needs the every-step parameter cache; "
                "train with Hara among --methods (or --overwrite)")
        cache = fileio.load_npy(cache_path, mmap_mode="r")
        start = record.window_start
        if cache.shape[0] != record.n_steps - start:
            raise ValueError(f"{cache_path}: expected {record.n_steps - start} rows, found {cache.shape[0]}")

        def params_at(s):
            return np.array(cache[s - start])

    return comp.influence(record, record.window_steps(), params_at, cfg.hvp_scaling,
                          progress=f"influence {method} seed {seed}")


def run_influence(cfg: C.Config, seed: int, method: str, data: Prepared | None = None,
                  per_sample: str = "auto") -> Path:
    """Write (or reuse) ``influence/{method}/influence_{seed}.csv``."""
    from .engine import load_prepared

    if method not in C.METHODS:
        raise ValueError(f"--methods: unknown method {method!r}")
    out = Path(cfg.output)
    target = paths.influence(out, method, seed)
    if not paths.record(out, seed).exists():
        raise FileNotFoundError(f"{paths.record(out, seed)}: no finished training run for seed {seed}")
    C.check_trained_with(cfg, out, seed)
    same = C.claim_folder(paths.influence_identity(out), paths.phase_root(out, "influence"),
                          cfg.infl_identity(), cfg.overwrite, "influence result")
    if same and target.exists():
        problem = checks.influence_problem(target, Record.load(paths.record(out, seed)).n_train)
        if problem is None:
            logger.info("seed %d %s: influence already computed, reused", seed, method)
            return target
        checks.report_damaged(target, problem)
    if data is None:
        data = load_prepared(cfg, seed)
    scores = compute_scores(cfg, seed, method, data, per_sample)
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise FloatingPointError(
            f"{target}: {bad} of {len(scores)} {method} scores are not finite (the training run "
            "diverged or the walk overflowed); lower --lr")
    fileio.write_csv(target, influence_frame(data, scores))
    logger.info("seed %d %s: influence written to %s", seed, method, target)
    return target


# --------------------------------------------------------------------------- CLI
PHASE_FLAGS = (
    "output", "dataset", "train_csv", "val_csv", "test_csv", "data_dir", "label_noise", "model",
    "width", "lr", "batch_size", "n_epochs", "augment", "infl_epochs", "methods", "hvp_scaling",
    "context", "device_id", "overwrite", "wait", "preset",
)


def main(argv=None) -> int:
    from .cli import run_cli

    p = argparse.ArgumentParser(
        prog="python -m sgd_influence.infl", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + "\nRuns on a training run's folder (-o) made with the same settings.")
    C.add_arguments(p, PHASE_FLAGS)
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="trial seed(s) (default: 0)")
    p.add_argument("--per-sample", choices=PER_SAMPLE_MODES, default="auto",
                   help="how per-sample terms are computed (default: auto, by network and context)")

    def body(cfg, ns):
        for seed in ns.seed:
            for method in cfg.methods:
                run_influence(cfg, seed, method, per_sample=ns.per_sample)
    return run_cli(p, argv, body)


if __name__ == "__main__":
    sys.exit(main())
