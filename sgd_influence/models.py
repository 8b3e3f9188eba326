"""Networks: cifarnet (the paper's six-conv net), logreg and mlp (small validation models).

A :class:`Network` owns its parameters: they are created under ``nn.parameter_scope``
after ``nn.clear_parameters()`` and then held as explicit variables, so nothing leaks
from one trial to the next in one process. Graphs are built functionally from those
variables; the caller builds one graph per batch size and reuses it.

Batch-normalisation modes of :meth:`Network.logits`:

``train``
    batch statistics; the running mean/var are updated in place (training, replay).
``batch``
    batch statistics; the running mean/var are NOT touched (Hessian-vector products;
    at batch size one this is the per-sample statistics of the reference's
    one-sample-at-a-time gradients).
``eval``
    running statistics (validation loss and its gradient, test accuracy).
``instance``
    per-sample statistics over each sample's H x W (instance normalisation with BN's
    gamma/beta): a batched equal of ``batch`` at batch size one.
``weighted``
    batch statistics weighted by per-sample weights ``w`` (shape (B, 1)), written in
    basic ops so they can be differentiated twice, in w too; ``stats`` (a list) receives
    per BN layer the (mean, unbiased variance) that the running statistics move toward.
    With w = 1 this is ``batch`` up to float rounding.
``eval`` with ``running``
    inference mode with the running statistics given as variables (basic ops), so the
    validation loss can be differentiated with respect to them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import nnabla as nn
import nnabla.functions as F
import numpy as np

MODELS = ("cifarnet", "logreg", "mlp")
BN_MODES = ("train", "batch", "eval", "instance", "weighted")
BN_DECAY = 0.9
BN_EPS = 1e-5
# --smooth: softplus(x) = log(1 + exp(beta x)) / beta. Measured on the demo setting (mnist5k,
# width 8, 10 epochs): beta 5 trains as well as ReLU with max pooling (test accuracy 0.934
# vs 0.938, one seed) and keeps leave-one-out tau 0.98; beta 1-2 train 3-7 points worse.
SOFTPLUS_BETA = 5.0
MLP_HIDDEN = 64


@dataclass(frozen=True)
class ModelSpec:
    """What a network is: architecture name, input shape (C, H, W), classes, width."""

    arch: str
    in_shape: tuple[int, int, int]
    num_classes: int
    width: int = 32  # channels of cifarnet's first block (32 in the paper)
    # cifarnet with softplus (beta SOFTPLUS_BETA) for ReLU and average- for max-pooling
    # (--smooth): the same graph without kinks, so the trained model is a smooth function
    # of the training data
    smooth: bool = False

    def __post_init__(self):
        if self.arch not in MODELS:
            raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {self.arch!r}")
        if self.width < 1:
            raise ValueError(f"--width: expected a positive integer, got {self.width}")


def _glorot(rng, fan_in, fan_out, shape):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=shape).astype(np.float32)


def _initial_values(spec: ModelSpec, seed: int) -> "OrderedDict[str, tuple[np.ndarray, bool]]":
    """Name -> (initial array, trainable), in a fixed order; seeded from the trial seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A17]))
    c, h, w = spec.in_shape
    out: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
    if spec.arch == "cifarnet":
        chans = [c]
        for block in range(3):
            width = spec.width * (2**block)
            for k in range(2):
                i = 2 * block + k + 1
                cin = chans[-1]
                out[f"conv{i}/W"] = (_glorot(rng, cin * 9, width * 9, (width, cin, 3, 3)), True)
                out[f"conv{i}/b"] = (np.zeros(width, np.float32), True)
                chans.append(width)
                if k == 0:
                    shape = (1, width, 1, 1)
                    out[f"bn{block + 1}/beta"] = (np.zeros(shape, np.float32), True)
                    out[f"bn{block + 1}/gamma"] = (np.ones(shape, np.float32), True)
                    out[f"bn{block + 1}/mean"] = (np.zeros(shape, np.float32), False)
                    out[f"bn{block + 1}/var"] = (np.ones(shape, np.float32), False)
        feat = chans[-1] * (h // 8) * (w // 8)
        out["fc/W"] = (_glorot(rng, feat, spec.num_classes, (feat, spec.num_classes)), True)
        out["fc/b"] = (np.zeros(spec.num_classes, np.float32), True)
    elif spec.arch == "logreg":
        feat = c * h * w
        out["fc/W"] = (np.zeros((feat, spec.num_classes), np.float32), True)
        out["fc/b"] = (np.zeros(spec.num_classes, np.float32), True)
    else:  # mlp: one tanh hidden layer (smooth, so finite differences of gradients work)
        feat = c * h * w
        out["fc1/W"] = (_glorot(rng, feat, MLP_HIDDEN, (feat, MLP_HIDDEN)), True)
        out["fc1/b"] = (np.zeros(MLP_HIDDEN, np.float32), True)
        out["fc2/W"] = (_glorot(rng, MLP_HIDDEN, spec.num_classes, (MLP_HIDDEN, spec.num_classes)), True)
        out["fc2/b"] = (np.zeros(spec.num_classes, np.float32), True)
    return out


class Network:
    """Parameters of one model plus graph construction on them."""

    def __init__(self, spec: ModelSpec, seed: int, scope: str = "net"):
        self.spec = spec
        nn.clear_parameters()
        self.variables: OrderedDict[str, nn.Variable] = OrderedDict()
        self.trainable: OrderedDict[str, nn.Variable] = OrderedDict()
        with nn.parameter_scope(scope):
            for name, (value, trainable) in _initial_values(spec, seed).items():
                var = nn.parameter.get_parameter_or_create(
                    name, value.shape, value, need_grad=trainable
                )
                self.variables[name] = var
                if trainable:
                    self.trainable[name] = var

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

    # ----------------------------------------------------------------- graphs
    def bn_state_names(self) -> list[str]:
        """Names of the BN running statistics, in layer order (mean, var per layer)."""
        return [k for k, v in self.variables.items() if k.startswith("bn") and k not in self.trainable]

    def _bn(self, x, block: int, mode: str, w=None, stats=None, running=None):
        beta = self.variables[f"bn{block}/beta"]
        gamma = self.variables[f"bn{block}/gamma"]
        if mode == "weighted":
            return weighted_batch_norm(x, beta, gamma, w, stats)
        if mode == "eval" and running is not None:
            mean, var = running[f"bn{block}/mean"], running[f"bn{block}/var"]
            return (x - mean) * F.pow_scalar(var + BN_EPS, -0.5) * gamma + beta
        if mode == "eval":
            return F.batch_normalization(
                x, beta, gamma, self.variables[f"bn{block}/mean"], self.variables[f"bn{block}/var"],
                axes=[1], decay_rate=BN_DECAY, eps=BN_EPS, batch_stat=False,
            )
        if mode == "instance":
            return F.instance_normalization(x, beta, gamma, channel_axis=1, batch_axis=0, eps=BN_EPS)
        if mode == "train":
            mean, var = self.variables[f"bn{block}/mean"], self.variables[f"bn{block}/var"]
        else:  # 'batch': throw-away running statistics, the saved ones stay untouched
            mean = nn.Variable(beta.shape, need_grad=False)
            var = nn.Variable(beta.shape, need_grad=False)
            mean.data.zero()
            var.d = np.ones(beta.shape, np.float32)
        return F.batch_normalization(
            x, beta, gamma, mean, var, axes=[1], decay_rate=BN_DECAY, eps=BN_EPS, batch_stat=True
        )

    def logits(self, x: nn.Variable, bn: str = "train", w: nn.Variable | None = None,
               stats: list | None = None, running: dict | None = None) -> nn.Variable:
        """Logits of ``x``; ``w``/``stats`` for bn='weighted', ``running`` for bn='eval'
        (see the module docstring)."""
        if bn not in BN_MODES:
            raise ValueError(f"bn mode: expected one of {BN_MODES}, got {bn!r}")
        if bn == "weighted" and w is None:
            raise ValueError("bn mode 'weighted' needs the per-sample weights w")
        v = self.variables
        if self.spec.arch == "cifarnet":
            h = x
            for block in range(1, 4):
                i = 2 * block - 1
                h = F.convolution(h, v[f"conv{i}/W"], v[f"conv{i}/b"], pad=(1, 1))
                act, pool = (_smooth_relu, F.average_pooling) if self.spec.smooth else (F.relu, F.max_pooling)
                h = act(self._bn(h, block, bn, w, stats, running))
                h = F.convolution(h, v[f"conv{i + 1}/W"], v[f"conv{i + 1}/b"], pad=(1, 1))
                h = pool(act(h), (2, 2))
            return F.affine(h, v["fc/W"], v["fc/b"])
        if self.spec.arch == "logreg":
            return F.affine(x, v["fc/W"], v["fc/b"])
        h = F.tanh(F.affine(x, v["fc1/W"], v["fc1/b"]))
        return F.affine(h, v["fc2/W"], v["fc2/b"])

    def has_batchnorm(self) -> bool:
        return self.spec.arch == "cifarnet"


def _smooth_relu(x: nn.Variable) -> nn.Variable:
    return F.softplus(x, beta=SOFTPLUS_BETA)


def weighted_batch_norm(x, beta, gamma, w, stats: list | None = None):
    """Batch normalisation over axes (0, 2, 3) with per-sample weights ``w`` (B, 1).

    mean = sum_i w_i x_i / n, var = sum_i w_i (x_i - mean)^2 / n with n = sum_i w_i * H * W
    (the plain batch statistics at w = 1, those of the batch without j at w_j = 0).
    ``stats`` receives (mean, var * n / (n - 1)): nnabla's running-variance update uses the
    unbiased variance over the B*H*W values of a channel.
    """
    b, _, h, wd = x.shape
    wb = F.reshape(w, (b, 1, 1, 1))
    n = F.reshape(F.sum(w), (1, 1, 1, 1)) * float(h * wd)
    mean = F.sum(x * wb, axis=(0, 2, 3), keepdims=True) / n
    xc = x - mean
    var = F.sum(xc * xc * wb, axis=(0, 2, 3), keepdims=True) / n
    if stats is not None:
        stats.append((mean, var * n / (n - 1.0)))
    return xc * F.pow_scalar(var + BN_EPS, -0.5) * gamma + beta


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
    values = _initial_values(spec, 0)
    every = sum(a.nbytes for a, _ in values.values())
    trainable = sum(a.nbytes for a, t in values.values() if t)
    return int(every), int(trainable)
