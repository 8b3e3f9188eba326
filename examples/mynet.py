import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    h = PF.convolution(x, 16, (3, 3), pad=(1, 1), name="conv1")
    h = F.relu(norm(h, "bn1"))
    h = F.max_pooling(h, (2, 2))
    h = F.relu(PF.convolution(h, 32, (3, 3), pad=(1, 1), name="conv2"))
    return PF.affine(F.average_pooling(h, (4, 4)), num_classes, name="fc")
