"""Networks behind one seam: ``Model.build(x, norm) -> logits`` (see :mod:`.base`).

Registered: cifarnet (the paper's, ReLU or --smooth), logreg and mlp; a user network
is ``FILE.py:FUNCTION``, a Neural Network Console network an ``.nnp`` file (see :mod:`.nnp`),
an ONNX network the ``.nnp`` nnabla's importer makes of it (see :mod:`.onnx_import`).
"""

from . import cifarnet, small  # noqa: F401  (register the built-in networks)
from .base import (
    BN_DECAY,
    BN_EPS,
    BN_MODES,
    Glorot,
    Model,
    ModelError,
    ModelSpec,
    Network,
    Norm,
    input_variables,
    lean_weighted_batch_norm,
    param,
    sample_losses,
    snapshot_nbytes,
    state_nbytes,
    weighted_batch_norm,
)
from .cifarnet import SOFTPLUS_BETA
from .nnp import NnpModel, NnpSource
from .registry import names, register
from .small import MLP_HIDDEN
from .user import FunctionModel

MODELS = names()

__all__ = [
    "BN_DECAY", "BN_EPS", "BN_MODES", "FunctionModel", "Glorot", "MLP_HIDDEN", "MODELS", "Model",
    "ModelError", "ModelSpec", "Network", "NnpModel", "NnpSource", "Norm", "SOFTPLUS_BETA",
    "input_variables", "lean_weighted_batch_norm", "names", "param", "register", "sample_losses", "snapshot_nbytes",
    "state_nbytes", "weighted_batch_norm",
]
