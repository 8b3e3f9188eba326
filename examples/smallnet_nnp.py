"""Write examples/smallnet.py's architecture as a Neural Network Console .nnp file, with
nnabla's own saver: a training network (PF.convolution, PF.batch_normalization, softplus,
average pooling, PF.affine, softmax cross-entropy), an optimizer naming it and its data
set, and a runtime network, as the console exports them. Input 1 x 28 x 28 (MNIST),
10 classes, pixels / 255; the parameters are freshly initialised (seed 0), not trained.

    .venv/bin/python examples/smallnet_nnp.py -o output/nets/smallnet.nnp
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S
from nnabla.utils.save import save

BATCH = 64
BETA = 5.0


def smallnet(x, num_classes: int, batch_stat: bool):
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name="conv1")
    h = PF.batch_normalization(h, batch_stat=batch_stat, name="bn1")
    h = F.average_pooling(F.softplus(h, beta=BETA), (2, 2))
    h = PF.convolution(h, 16, (3, 3), pad=(1, 1), name="conv2")
    h = PF.batch_normalization(h, batch_stat=batch_stat, name="bn2")
    h = F.average_pooling(F.softplus(h, beta=BETA), (4, 4))
    return PF.affine(h, num_classes, name="fc")


def write_nnp(path: Path, shape=(1, 28, 28), num_classes: int = 10, seed: int = 0) -> None:
    nn.random.seed(seed)
    scope: OrderedDict = OrderedDict()
    with nn.parameter_scope("", scope):
        x = nn.Variable((BATCH, *shape))
        t = nn.Variable((BATCH, 1))
        loss = F.mean(F.softmax_cross_entropy(smallnet(x, num_classes, True), t))
        x_run = nn.Variable((BATCH, *shape))
        y_run = F.softmax(smallnet(x_run, num_classes, False))
        solver = S.Sgd(0.01)
        solver.set_parameters(nn.get_parameters())
        path.parent.mkdir(parents=True, exist_ok=True)
        save(str(path), {
            "networks": [
                {"name": "Main", "batch_size": BATCH, "outputs": {"loss": loss},
                 "names": {"x": x, "y": t}},
                {"name": "MainRuntime", "batch_size": BATCH, "outputs": {"y'": y_run},
                 "names": {"x": x_run}}],
            "optimizers": [
                {"name": "Optimizer", "solver": solver, "network": "Main", "dataset": "Training",
                 "weight_decay": 0, "lr_decay": 1, "lr_decay_interval": 1, "update_interval": 1}],
            "datasets": [
                {"name": "Training", "uri": "train.csv", "variables": {"x": x, "y": t},
                 "shuffle": True, "batch_size": BATCH, "no_image_normalization": False}],
            "executors": [{"name": "Executor", "network": "MainRuntime", "data": ["x"], "output": ["y'"]}],
        })


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("output/nets/smallnet.nnp"),
                   help="the .nnp file to write (default: output/nets/smallnet.nnp)")
    args = p.parse_args(argv)
    write_nnp(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
