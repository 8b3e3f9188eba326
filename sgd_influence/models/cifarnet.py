"""cifarnet: the paper's network (six 3x3 convolutions in three blocks, BN after the
first convolution of each block, 2x2 pooling after each block, one affine layer).

``--smooth`` replaces ReLU by softplus (beta :data:`SOFTPLUS_BETA`) and max pooling by
average pooling: the same graph without kinks, so the trained model is a smooth function
of the training data (and of a sample's weight, which is what influence estimates).
"""

from __future__ import annotations

from dataclasses import dataclass

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
from nnabla.parameter import parameter_scope

from ..settings import at_least, declare, setting
from .base import Glorot, Norm, param
from .registry import register

# Measured on the demo setting (mnist5k, width 8, 10 epochs): beta 5 trains as well as
# ReLU with max pooling (test accuracy 0.934 vs 0.938, one seed) and keeps leave-one-out
# tau 0.98; beta 1-2 train 3-7 points worse.
SOFTPLUS_BETA = 5.0
# nnabla's parametric-function scope of each of our layer kinds (final.h5 is loadable by
# a network built with PF.convolution(name='conv1'), PF.batch_normalization(name='bn1')
# and PF.affine(name='fc'))
_PF_SCOPE = {"conv": "conv", "bn": "bn", "fc": "affine"}


def pf_name(name: str) -> str:
    """``conv1/W`` -> ``conv1/conv/W``, ``bn1/mean`` -> ``bn1/bn/mean``, ``fc/W`` ->
    ``fc/affine/W``."""
    layer, leaf = name.rsplit("/", 1)
    kind = layer.rstrip("0123456789")
    if kind not in _PF_SCOPE:
        raise ValueError(f"no nnabla parametric function for array {name!r}")
    return f"{layer}/{_PF_SCOPE[kind]}/{leaf}"


def _conv(h: nn.Variable, name: str, out: int, norm: Norm) -> nn.Variable:
    with parameter_scope(name):
        w = param("W", (out, h.shape[1], 3, 3), Glorot(norm.rng))
        b = param("b", (out,), I.ConstantInitializer(0.0))
    return F.convolution(h, w, b, pad=(1, 1))


def affine(h: nn.Variable, name: str, out: int, init) -> nn.Variable:
    """An affine layer ``name`` with weights (features, out) from ``init``, zero bias."""
    feat = 1
    for s in h.shape[1:]:
        feat *= s
    with parameter_scope(name):
        w = param("W", (feat, out), init)
        b = param("b", (out,), I.ConstantInitializer(0.0))
    return F.affine(h, w, b)


class CifarNet:
    name = "cifarnet"

    def __init__(self, num_classes: int, width: int = 32, smooth: bool = False):
        self.num_classes, self.width, self.smooth = num_classes, width, smooth

    def build(self, x: nn.Variable, norm: Norm) -> nn.Variable:
        if self.smooth:
            act, pool = (lambda v: F.softplus(v, beta=SOFTPLUS_BETA)), F.average_pooling
        else:
            act, pool = F.relu, F.max_pooling
        h = x
        for block in range(1, 4):
            i = 2 * block - 1
            width = self.width * 2 ** (block - 1)
            h = act(norm(_conv(h, f"conv{i}", width, norm), f"bn{block}"))
            h = pool(act(_conv(h, f"conv{i + 1}", width, norm)), (2, 2))
        return affine(h, "fc", self.num_classes, Glorot(norm.rng))

    def export_name(self, name: str) -> str:
        return pf_name(name)


@dataclass(frozen=True)
class CifarnetSettings:
    width: int = setting(32, ["--width"], "channels of cifarnet's first block (paper: 32)", check=at_least(1))
    smooth: bool = setting(
        True, ["--smooth"],
        "cifarnet with softplus (beta 5) instead of ReLU and average instead of max pooling; "
        "without kinks the trained model is a smooth function of each sample's weight and the "
        "scores predict leave-one-out retraining (--no-smooth: the paper's ReLU/max-pool "
        "cifarnet)", negatable=True)


@register("cifarnet")
def _cifarnet(spec) -> CifarNet:
    return CifarNet(spec.num_classes, spec.width, spec.smooth)


declare("network", "cifarnet", CifarnetSettings)
