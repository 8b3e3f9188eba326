"""A network written for 28 x 28 images with a flatten-affine head (its weights are sized by
the image): two convolutions with norm, softplus and 2 x 2 average pooling, then PF.affine
on the 16 x 7 x 7 map. docs/own-network.md measures it on mnist5k exported as CSV."""

import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name="conv1")
    h = F.average_pooling(F.softplus(norm(h, "bn1")), (2, 2))
    h = PF.convolution(h, 16, (3, 3), pad=(1, 1), name="conv2")
    h = F.average_pooling(F.softplus(norm(h, "bn2")), (2, 2))
    return PF.affine(h, num_classes, name="fc")  # flattens: its weights are sized by the image
