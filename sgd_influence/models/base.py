"""The model seam: a network is a function that builds logits from an input and a norm.

A :class:`Model` has one method, ``build(x, norm) -> logits``. It creates its
parameters the nnabla way (``nn.parameter_scope`` + parametric functions, or
``get_parameter_or_create``) and calls ``norm(h, name)`` wherever it wants batch
normalisation. The project supplies ``norm`` (a :class:`Norm`) in the mode the caller
needs, so one build function serves training, replay, Hessian-vector products, the
exact batch-norm derivative and evaluation:

``train``
    batch statistics; the running mean/var are updated in place (training, replay).
``batch``
    batch statistics; the running mean/var are NOT touched (Hessian-vector products;
    at batch size one this is the per-sample statistics of the reference's
    one-sample-at-a-time gradients).
``eval``
    running statistics (validation loss and its gradient, test accuracy).
``instance``
    per-sample statistics over each sample's spatial positions (instance normalisation
    with BN's gamma/beta): a batched equal of ``batch`` at batch size one.
``weighted``
    batch statistics weighted by per-sample weights ``w`` (shape (B, 1)), written in
    basic ops so they can be differentiated twice, in w too; ``stats`` (a list) receives
    per BN layer the (mean, unbiased variance) that the running statistics move toward.
    With w = 1 this is ``batch`` up to float rounding.
``eval`` with ``running``
    inference mode with the running statistics given as variables (basic ops), so the
    validation loss can be differentiated with respect to them.

:class:`Network` owns one model's parameters in a private parameter scope (nothing
global leaks from one trial to the next in one process). Its first build creates them,
seeded from the trial seed; the trainable parameters are those created with
``need_grad=True``, the BN running statistics those ``norm`` created. "Has batch norm"
is whether the build called ``norm``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import numpy as np

from ..identities import is_user_model
from . import registry
from .nnp import NnpModel, NnpSource
from .registry import ModelError
from .user import function_model

BN_MODES = ("train", "batch", "eval", "instance", "weighted")
BN_DECAY = 0.9
BN_EPS = 1e-5
# functions that normalise with statistics the walk cannot see: a network must use norm
_OWN_BN = ("BatchNormalization", "FusedBatchNormalization", "SyncBatchNormalization")


class Model(Protocol):
    """What every network implements."""

    name: str

    def build(self, x: nn.Variable, norm: "Norm") -> nn.Variable:
        """Logits (B, classes) of ``x``; batch normalisation only through ``norm``."""

    def export_name(self, name: str) -> str:
        """The name an array is saved under in ``final.h5``."""

    # Optional: ``pixel_scale`` (a float) makes the engine feed uint8 pixels times it
    # (an .nnp network: / 255, as Neural Network Console does) instead of
    # preprocess.normalize; absent or None: the project's normalisation.


@dataclass(frozen=True)
class ModelSpec:
    """What a network is: its registered name (or ``file.py:function``), input shape
    (C, H, W), classes, and the built-in networks' width and --smooth; ``nnp``: a
    Neural Network Console file's network instead (``arch`` is then only its label)."""

    arch: str
    in_shape: tuple[int, int, int]
    num_classes: int
    width: int = 32  # channels of cifarnet's first block (32 in the paper)
    smooth: bool = False  # cifarnet: softplus and average pooling instead of ReLU / max
    nnp: NnpSource | None = None

    def __post_init__(self):
        if self.nnp is None:
            registry.check_name(self.arch)
        if self.width < 1:
            raise ValueError(f"--width: expected a positive integer, got {self.width}")

    def model(self) -> Model:
        if self.nnp is not None:
            return NnpModel(self.nnp, self.num_classes)
        if is_user_model(self.arch):
            return function_model(self.arch, self.num_classes)
        return registry.factory(self.arch)(self)


# --------------------------------------------------------------------------- initializers
class Glorot(I.BaseInitializer):
    """Uniform Glorot initialisation drawn from a numpy Generator (called on creation only).

    Fans from the shape: (out, in, kh, kw) for a convolution, (in, out) for an affine."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, shape):
        if len(shape) == 4:
            field = shape[2] * shape[3]
            fan_in, fan_out = shape[1] * field, shape[0] * field
        else:
            fan_in, fan_out = shape[0], int(np.prod(shape[1:]))
        lim = math.sqrt(6.0 / (fan_in + fan_out))
        return self.rng.uniform(-lim, lim, size=tuple(shape)).astype(np.float32)


def param(name: str, shape, init, need_grad: bool = True) -> nn.Variable:
    """A parameter of the current scope (created with ``init`` on the first build)."""
    return nn.parameter.get_parameter_or_create(name, tuple(shape), init, need_grad=need_grad)


# --------------------------------------------------------------------------- norm
class Norm:
    """The batch-normalisation layer handed to a model's build, in one mode."""

    def __init__(self, mode: str, rng: np.random.Generator, w: nn.Variable | None = None,
                 stats: list | None = None, running: dict | None = None,
                 names: dict | None = None, lean: bool = False):
        if mode not in BN_MODES:
            raise ValueError(f"bn mode: expected one of {BN_MODES}, got {mode!r}")
        if mode == "weighted" and w is None:
            raise ValueError("bn mode 'weighted' needs the per-sample weights w")
        self.mode, self.w, self.stats, self.running = mode, w, stats, running
        self.lean = lean  # 'weighted': lean_weighted_batch_norm (first derivatives only)
        self.rng = rng  # the trial's seeded Generator: what the built-in networks draw from
        self._names = names or {}  # id(registered running variable) -> its name
        self.layers: list[tuple[nn.Variable, nn.Variable]] = []  # registered (mean, var)
        self.decays: list[float] = []  # each layer's decay rate of its running statistics

    def __call__(self, h: nn.Variable, name: str = "bn", *, eps: float = BN_EPS,
                 decay_rate: float = BN_DECAY) -> nn.Variable:
        """Batch normalisation of ``h`` over every axis but the channel axis 1, with its
        parameters under scope ``name``; ``eps`` and ``decay_rate`` (the running
        statistics' r <- d r + (1 - d) batch statistic) as ``PF.batch_normalization``'s."""
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"norm(h, {name!r}): eps: expected a positive number, got {eps!r}")
        if not (isinstance(decay_rate, numbers.Real) and 0 <= decay_rate <= 1):
            raise ValueError(f"norm(h, {name!r}): decay_rate: expected a number from 0 to 1, "
                             f"got {decay_rate!r}")
        eps, decay_rate = float(eps), float(decay_rate)
        shape = (1, h.shape[1]) + (1,) * (len(h.shape) - 2)
        with nn.parameter_scope(name):
            beta = param("beta", shape, I.ConstantInitializer(0.0))
            gamma = param("gamma", shape, I.ConstantInitializer(1.0))
            mean = param("mean", shape, I.ConstantInitializer(0.0), need_grad=False)
            var = param("var", shape, I.ConstantInitializer(1.0), need_grad=False)
            self.layers.append((nn.parameter.get_parameter("mean"), nn.parameter.get_parameter("var")))
        self.decays.append(decay_rate)
        mode = self.mode
        if mode == "weighted" and self.lean:
            return lean_weighted_batch_norm(h, beta, gamma, self.w, self.stats, eps)
        if mode == "weighted":
            return weighted_batch_norm(h, beta, gamma, self.w, self.stats, eps)
        if mode == "eval" and self.running is not None:
            reg_mean, reg_var = self.layers[-1]
            mean = self.running[self._names[id(reg_mean)]]
            var = self.running[self._names[id(reg_var)]]
            return (h - mean) * F.pow_scalar(var + eps, -0.5) * gamma + beta
        if mode == "eval":
            return F.batch_normalization(h, beta, gamma, mean, var, axes=[1], decay_rate=decay_rate,
                                         eps=eps, batch_stat=False)
        if mode == "instance":
            return F.instance_normalization(h, beta, gamma, channel_axis=1, batch_axis=0, eps=eps)
        if mode == "batch":  # throw-away running statistics, the saved ones stay untouched
            mean = nn.Variable(shape, need_grad=False)
            var = nn.Variable(shape, need_grad=False)
            mean.data.zero()
            var.d = np.ones(shape, np.float32)
        return F.batch_normalization(h, beta, gamma, mean, var, axes=[1], decay_rate=decay_rate,
                                     eps=eps, batch_stat=True)


def weighted_batch_norm(x, beta, gamma, w, stats: list | None = None, eps: float = BN_EPS):
    """Batch normalisation over every axis but 1 with per-sample weights ``w`` (B, 1).

    mean = sum_i w_i x_i / n, var = sum_i w_i (x_i - mean)^2 / n with n = sum_i w_i * S
    (S: positions per sample and channel; the plain batch statistics at w = 1, those of
    the batch without j at w_j = 0). ``stats`` receives (mean, var * n / (n - 1)):
    nnabla's running-variance update uses the unbiased variance over the B*S values of
    a channel.
    """
    b = x.shape[0]
    rest = x.shape[2:]
    axes = (0,) + tuple(range(2, len(x.shape)))
    wb = F.reshape(w, (b,) + (1,) * (len(x.shape) - 1))
    n = F.reshape(F.sum(w), (1,) * len(x.shape)) * float(np.prod(rest, dtype=np.int64))
    mean = F.sum(x * wb, axis=axes, keepdims=True) / n
    xc = x - mean
    var = F.sum(xc * xc * wb, axis=axes, keepdims=True) / n
    if stats is not None:
        stats.append((mean, var * n / (n - 1.0)))
    return xc * F.pow_scalar(var + eps, -0.5) * gamma + beta


def lean_weighted_batch_norm(x, beta, gamma, w, stats: list | None = None, eps: float = BN_EPS):
    """:func:`weighted_batch_norm` for graphs that are differentiated once (its second
    derivatives are wrong): the same value and first derivatives in x (theta) and w, in
    nnabla's own batch normalisation and a few operations on per-sample statistics.

    * x is first shifted by its batch mean c taken as a constant (``F.unlink``: no
      gradient). Normalisation does not change under a constant shift, and the shifted
      values keep nnabla's batch normalisation, which takes the variance as a mean of
      squares minus the squared mean, as exact as a centred sum;
    * the normalisation is nnabla's training-mode batch normalisation (batch statistics,
      throw-away running statistics): its backward pass holds the statistics' dependence
      on x, at w = 1 the weighted one;
    * the statistics' dependence on w enters through beta and gamma, by terms that are
      zero in value. With mean(w) and var(w) computed from per-sample statistics taken as
      constants (m_i, e_i: sample i's mean and mean square over the positions; mean(w) =
      sum_i w_i m_i / sum_i w_i, var(w) = sum_i w_i e_i / sum_i w_i - mean(w)^2), and
      [.] a value without gradient, s = sqrt([var] + eps):

          beta'  = beta  - ([gamma] / s) (mean(w) - [mean(w)])
          gamma' = gamma - ([gamma] / (2 s^2)) (var(w) - [var(w)])

      y = gamma' (x - mean) / s + beta' then has dy/dmean = -gamma / s and dy/dvar =
      -gamma (x - mean) / (2 s^3) along w: the derivatives of the normalisation in its
      statistics;
    * ``stats`` receives the statistics again from the same per-sample ones with their
      gradient (in x and w): (mean, var n / (n - 1)) as in :func:`weighted_batch_norm`.

    Operations on whole activations: the shift, a square, three means over positions, and
    the normalisation's (against nine basic ones and their backward passes)."""
    b, nd = x.shape[0], len(x.shape)
    space = tuple(range(2, nd))
    shape = (1, x.shape[1]) + (1,) * (nd - 2)
    c = F.mean(x, axis=(0,) + space, keepdims=True)
    c.need_grad = False  # a constant to the backward pass (none computed for it)
    xs = x - c
    m = F.mean(xs, axis=space, keepdims=True)
    e = F.mean(F.pow_scalar(xs, 2.0), axis=space, keepdims=True)
    wb = F.reshape(w, (b,) + (1,) * (nd - 1))
    sw = F.reshape(F.sum(w), (1,) * nd)

    def moments(m_i, e_i):
        mean = F.sum(m_i * wb, axis=0, keepdims=True) / sw
        return mean, F.sum(e_i * wb, axis=0, keepdims=True) / sw - mean * mean

    if stats is not None:
        mean, var = moments(m, e)
        n = sw * float(np.prod(x.shape[2:], dtype=np.int64))
        stats.append((mean + c, var * n / (n - 1.0)))
    mean_w, var_w = moments(F.unlink(m), F.unlink(e))
    g0 = F.unlink(gamma)
    inv_s = F.pow_scalar(F.unlink(var_w) + eps, -0.5)
    beta_ = beta - g0 * inv_s * (mean_w - F.unlink(mean_w))
    gamma_ = gamma - 0.5 * g0 * inv_s * inv_s * (var_w - F.unlink(var_w))
    running_mean, running_var = nn.Variable(shape, need_grad=False), nn.Variable(shape, need_grad=False)
    running_mean.data.zero()
    running_var.d = np.ones(shape, np.float32)
    return F.batch_normalization(xs, beta_, gamma_, running_mean, running_var, axes=[1], eps=eps,
                                 batch_stat=True)


@contextlib.contextmanager
def _seeded_nnabla_rng(seed: int):
    """nnabla's global generator (the default initializers of ``PF.*``) seeded from the
    trial seed for the duration of the creating build."""
    import nnabla.random as nr

    saved = nr.prng
    nr.prng = np.random.RandomState(np.random.SeedSequence([seed, 0x1A17, 1]).generate_state(1))
    try:
        yield
    finally:
        nr.prng = saved


# --------------------------------------------------------------------------- network
class Network:
    """The parameters of one model plus graph construction on them."""

    def __init__(self, spec: ModelSpec | Model, seed: int, in_shape=None):
        if isinstance(spec, ModelSpec):
            self.spec, self.model, in_shape = spec, spec.model(), spec.in_shape
        else:
            self.spec, self.model = None, spec
            if in_shape is None:
                raise ValueError("a Model needs the input shape (C, H, W)")
        self.in_shape = tuple(int(s) for s in in_shape)
        self._scope: OrderedDict = OrderedDict()
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A17]))
        self._names: dict[int, str] = {}
        x = nn.Variable((2, *self.in_shape))
        w = nn.Variable((2, 1))
        with _seeded_nnabla_rng(seed):
            norm = Norm("weighted", self._rng, w=w, stats=[])
            out = self._build(x, norm)
        self._check_output(out, 2)
        _refuse_own_batch_norm(out, self.model.name)
        with nn.parameter_scope("", self._scope):
            self.variables: OrderedDict[str, nn.Variable] = OrderedDict(
                nn.get_parameters(grad_only=False))
        if not self.variables:
            raise ModelError(f"network {self.model.name}: the build created no parameters")
        self._names = {id(v): k for k, v in self.variables.items()}
        self.trainable: OrderedDict[str, nn.Variable] = OrderedDict(
            (k, v) for k, v in self.variables.items() if v.need_grad)
        if not self.trainable:
            raise ModelError(f"network {self.model.name}: nothing to train (the build created its "
                             "parameters with need_grad False)")
        layers = [(self._names[id(m)], self._names[id(v)]) for m, v in norm.layers]
        self.bn_layers: list[tuple[str, str]] = list(dict.fromkeys(layers))
        decays: dict[tuple[str, str], float] = {}
        for layer, decay in zip(layers, norm.decays):
            if decays.setdefault(layer, decay) != decay:
                raise ModelError(f"network {self.model.name}: batch-norm layer {layer[0].rpartition('/')[0]} "
                                 f"is used with decay rates {decays[layer]} and {decay}")
        # each running statistic's decay rate, in bn_state_names order
        self.bn_decays: list[float] = [decays[layer] for layer in self.bn_layers for _ in layer]
        self.num_classes = int(out.shape[1])

    def _build(self, x, norm: Norm) -> nn.Variable:
        with nn.parameter_scope("", self._scope):
            return self.model.build(x, norm)

    def _check_output(self, out, batch: int) -> None:
        name = self.model.name
        if not isinstance(out, nn.Variable):
            raise ModelError(f"network {name}: build returned {type(out).__name__}, expected the "
                             "logits as an nnabla Variable")
        if len(out.shape) != 2 or out.shape[0] != batch or out.shape[1] < 2:
            raise ModelError(f"network {name}: build returned shape {tuple(out.shape)}, expected "
                             f"the logits ({batch}, classes) with at least 2 classes")
        if self.spec is not None and out.shape[1] != self.spec.num_classes:
            raise ModelError(f"network {name}: build returned {out.shape[1]} logits, expected one "
                             f"per class ({self.spec.num_classes})")

    # ----------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every array (trainable parameters and BN running statistics)."""
        return OrderedDict((k, v.d.copy()) for k, v in self.variables.items())

    def load_state_dict(self, state) -> None:
        for k, v in self.variables.items():
            if k not in state:
                raise KeyError(f"snapshot has no array {k!r}")
            arr = np.asarray(state[k])
            if arr.shape != v.shape:
                raise ValueError(f"snapshot array {k!r} has shape {arr.shape}, expected {v.shape}")
            v.d = arr

    def num_trainable(self) -> int:
        return int(sum(v.size for v in self.trainable.values()))

    def get_flat(self) -> np.ndarray:
        return np.concatenate([v.d.ravel() for v in self.trainable.values()]).astype(np.float32)

    def set_flat(self, flat: np.ndarray) -> None:
        off = 0
        for v in self.trainable.values():
            v.d = flat[off : off + v.size].reshape(v.shape)
            off += v.size

    def zero_grad(self) -> None:
        for v in self.trainable.values():
            v.grad.zero()

    def flat_grad(self) -> np.ndarray:
        return np.concatenate([v.g.ravel() for v in self.trainable.values()]).astype(np.float32)

    def export_names(self) -> dict[str, str]:
        """Array name -> the name it is saved under in ``final.h5``."""
        return {k: self.model.export_name(k) for k in self.variables}

    # ----------------------------------------------------------------- graphs
    def bn_state_names(self) -> list[str]:
        """Names of the BN running statistics, in layer order (mean, var per layer)."""
        return [name for pair in self.bn_layers for name in pair]

    def logits(self, x: nn.Variable, bn: str = "train", w: nn.Variable | None = None,
               stats: list | None = None, running: dict | None = None,
               lean: bool = False) -> nn.Variable:
        """Logits of ``x`` with batch normalisation in mode ``bn`` (see the module
        docstring); ``w``/``stats`` for bn='weighted' (``lean``: its formulation for
        first derivatives only, :func:`lean_weighted_batch_norm`), ``running`` for bn='eval'."""
        norm = Norm(bn, self._rng, w=w, stats=stats, running=running, names=self._names, lean=lean)
        out = self._build(x, norm)
        self._check_output(out, x.shape[0])
        return out

    def has_batchnorm(self) -> bool:
        return bool(self.bn_layers)

    def check_deterministic(self, batch: int = 4) -> None:
        """Refuse a network whose training step is not a function of its inputs and
        parameters: two builds of its graph, each run twice on one batch, must give the
        same logits bit for bit. Replay, the walk and the retrains recompute recorded
        steps; random operations (``F.dropout``, ``F.randn``, a numpy random constant
        drawn while building) would make each recomputation another step."""
        rng = np.random.default_rng(0)
        x = nn.Variable((batch, *self.in_shape))
        x.d = rng.standard_normal(x.shape).astype(np.float32)
        outs = []
        for _build in range(2):
            logits = self.logits(x, bn="batch" if self.has_batchnorm() else "train")
            for _run in range(2):
                logits.forward(clear_buffer=True)
                outs.append(logits.d.copy())
        if not all(np.array_equal(outs[0], o, equal_nan=True) for o in outs[1:]):
            raise ModelError(
                f"network {self.model.name}: its output differs between two evaluations on one "
                "batch (a random operation such as F.dropout or F.randn, or a random constant "
                "drawn while building); the replay and the influence walk need a deterministic "
                "step: remove it")


def _refuse_own_batch_norm(out: nn.Variable, name: str) -> None:
    found: list[str] = []
    out.visit(lambda f: found.append(f.info.type_name) if f.info.type_name in _OWN_BN else None)
    if found:
        raise ModelError(
            f"network {name}: uses {found[0]} directly (e.g. PF.batch_normalization); call the "
            "norm(h, name) argument instead, so the influence walk sees the batch statistics")


# --------------------------------------------------------------------------- helpers
def sample_losses(logits: nn.Variable, t: nn.Variable) -> nn.Variable:
    """Per-sample softmax cross-entropy (B, 1).

    At batch size one nnabla's second derivative of ``F.softmax_cross_entropy`` fails
    ('Dimensions of inputs must match'); there the same loss is written as
    -<log_softmax(z), onehot(t)>, which differentiates twice at any batch size."""
    if logits.shape[0] > 1:
        return F.softmax_cross_entropy(logits, t)
    k = logits.shape[1]
    return -F.sum(F.log_softmax(logits, axis=1) * F.one_hot(t, (k,)), axis=1, keepdims=True)


def input_variables(batch_size: int, in_shape) -> tuple[nn.Variable, nn.Variable]:
    """Image and label input variables for one batch size."""
    x = nn.Variable((batch_size, *in_shape))
    t = nn.Variable((batch_size, 1))
    return x, t


def snapshot_nbytes(state) -> int:
    """Raw bytes of a parameter snapshot (float32 arrays)."""
    return int(sum(np.asarray(a).nbytes for a in state.values()))


def state_nbytes(spec: ModelSpec) -> tuple[int, int]:
    """Bytes (float32) of every array of a network of ``spec`` and of its trainable ones."""
    net = Network(spec, 0)
    every = sum(v.size for v in net.variables.values()) * 4
    return int(every), int(net.num_trainable() * 4)


BuildFn = Callable[[nn.Variable, Norm], nn.Variable]
