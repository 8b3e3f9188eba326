"""Write a small network as an ONNX file, the way PyTorch exports one (opset 13, a dynamic
batch axis), built with ``onnx.helper`` so no PyTorch is needed: Conv 3x3 (8 channels),
BatchNormalization, Relu, AveragePool 4x4, Flatten, Gemm to 10 classes. Input 1 x 28 x 28
(MNIST); the parameters are freshly initialised (seed 0), not trained.

    .venv/bin/python examples/convnet_onnx.py -o output/nets/convnet.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save_model

SHAPE, CLASSES, CHANNELS = (1, 28, 28), 10, 8


def write_onnx(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    fan = 9 * SHAPE[0]
    flat = CHANNELS * (SHAPE[1] // 4) * (SHAPE[2] // 4)
    params = {
        "conv.weight": rng.uniform(-1, 1, (CHANNELS, SHAPE[0], 3, 3)) * np.sqrt(3 / fan),
        "conv.bias": np.zeros(CHANNELS),
        "bn.weight": np.ones(CHANNELS), "bn.bias": np.zeros(CHANNELS),
        "bn.running_mean": np.zeros(CHANNELS), "bn.running_var": np.ones(CHANNELS),
        "fc.weight": rng.uniform(-1, 1, (CLASSES, flat)) * np.sqrt(3 / flat),  # (out, in), transB
        "fc.bias": np.zeros(CLASSES),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c1"], name="/conv/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.weight", "bn.bias", "bn.running_mean",
                                                "bn.running_var"], ["b1"], name="/bn/BatchNormalization",
                         epsilon=1e-5, momentum=0.9),
        helper.make_node("Relu", ["b1"], ["r1"], name="/relu/Relu"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="/pool/AveragePool", kernel_shape=[4, 4],
                         strides=[4, 4]),
        helper.make_node("Flatten", ["p1"], ["f1"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["f1", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="pytorch")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("output/nets/convnet.onnx"),
                    help="the .onnx file to write (default: output/nets/convnet.onnx)")
    write_onnx(ap.parse_args().output)


if __name__ == "__main__":
    main()
