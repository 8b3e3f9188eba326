"""The network of docs/own-network.md's example run: two convolutions (8 and 16 channels),
each followed by the project's batch normalisation, softplus and average pooling, then
one affine layer. Smooth activations and average pooling instead of ReLU and max pooling
make the influence scores track retraining better (docs/limits.md).

    .venv/bin/python train_infl_eval.py --model examples/smallnet.py:net ...
"""

import nnabla.functions as F
import nnabla.parametric_functions as PF

BETA = 5.0  # softplus sharpness, as cifarnet's --smooth


def net(x, num_classes, norm):
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name="conv1")
    h = F.average_pooling(F.softplus(norm(h, "bn1"), beta=BETA), (2, 2))
    h = PF.convolution(h, 16, (3, 3), pad=(1, 1), name="conv2")
    h = F.average_pooling(F.softplus(norm(h, "bn2"), beta=BETA), (4, 4))
    return PF.affine(h, num_classes, name="fc")
