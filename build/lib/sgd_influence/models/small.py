"""The small validation networks: softmax regression (logreg) and a one-hidden-layer
tanh network (mlp; smooth, so finite differences of gradients work)."""

from __future__ import annotations

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I

from .base import Glorot, Norm
from .cifarnet import affine, pf_name
from .registry import register

MLP_HIDDEN = 64


class LogReg:
    name = "logreg"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def build(self, x: nn.Variable, norm: Norm) -> nn.Variable:
        return affine(x, "fc", self.num_classes, I.ConstantInitializer(0.0))

    def export_name(self, name: str) -> str:
        return pf_name(name)


class MLP:
    name = "mlp"

    def __init__(self, num_classes: int, hidden: int = MLP_HIDDEN):
        self.num_classes, self.hidden = num_classes, hidden

    def build(self, x: nn.Variable, norm: Norm) -> nn.Variable:
        h = F.tanh(affine(x, "fc1", self.hidden, Glorot(norm.rng)))
        return affine(h, "fc2", self.num_classes, Glorot(norm.rng))

    def export_name(self, name: str) -> str:
        return pf_name(name)


@register("logreg")
def _logreg(spec) -> LogReg:
    return LogReg(spec.num_classes)


@register("mlp")
def _mlp(spec) -> MLP:
    return MLP(spec.num_classes)
