"""ONNX networks (``--model-onnx FILE.onnx``): a Conv -> BatchNormalization -> Relu ->
GlobalAveragePool -> Flatten -> Gemm model written here with onnx.helper (opset 13, a
1x12x10 input, as PyTorch exports it: dynamic batch, initializers named after the
module's parameters), converted by nnabla's importer, gives the numpy reference's logits
at its own parameters and after training, runs end to end, is identified by its bytes,
converted once; the refusals are one line naming the node."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import h5py
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest
from synth import small_run_args, write_csv_dataset

onnx = pytest.importorskip("onnx")
pytest.importorskip("nnabla.utils.converter.onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import train_infl_eval  # noqa: E402
from sgd_influence import config as C  # noqa: E402
from sgd_influence import engine, identities, paths  # noqa: E402
from sgd_influence.models import (  # noqa: E402
    FunctionModel,
    ModelError,
    Network,
    NnpModel,
    NnpSource,
    onnx_import,
)

SHAPE = (1, 12, 10)  # (C, H, W): unlike any built-in network's input
K, CLASSES, EPS = 4, 4, 1e-3
STATISTICS = {"bn.running_mean", "bn.running_var"}


def onnx_parameters(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = {"conv.weight": rng.normal(0, 0.5, (K, SHAPE[0], 3, 3)), "conv.bias": rng.normal(0, 0.1, K),
         "bn.weight": rng.uniform(0.5, 1.5, K), "bn.bias": rng.normal(0, 0.1, K),
         "bn.running_mean": rng.normal(0, 0.2, K), "bn.running_var": rng.uniform(0.5, 2.0, K),
         "fc.weight": rng.normal(0, 0.5, (CLASSES, K)), "fc.bias": rng.normal(0, 0.1, CLASSES)}
    return {k: v.astype(np.float32) for k, v in p.items()}


def write_onnx(path: Path, *, extra: str | None = None, softmax: bool = False,
               seed: int = 0) -> dict[str, np.ndarray]:
    """The model as PyTorch exports it (``extra``: a Dropout in training mode or in
    inference mode, or a node of an op type nnabla's importer does not know, after the
    Relu; ``softmax``: a final Softmax)."""
    params = onnx_parameters(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    after_relu = "r1"
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c1"], name="/conv/Conv",
                         pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "bn.weight", "bn.bias", "bn.running_mean",
                                                "bn.running_var"], ["b1"], name="/bn/BatchNormalization",
                         epsilon=EPS, momentum=0.9),
        helper.make_node("Relu", ["b1"], ["r1"], name="/relu/Relu"),
    ]
    if extra in ("dropout", "inference dropout"):
        inits += [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
                  numpy_helper.from_array(np.array(extra == "dropout"), "training_mode")]
        nodes.append(helper.make_node("Dropout", ["r1", "ratio", "training_mode"], ["d1"],
                                      name="/drop/Dropout"))
        after_relu = "d1"
    elif extra == "unknown":
        nodes.append(helper.make_node("GridSample", ["r1", "r1"], ["d1"], name="/warp/GridSample"))
        after_relu = "d1"
    nodes += [
        helper.make_node("GlobalAveragePool", [after_relu], ["g1"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["g1"], ["f1"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["f1", "fc.weight", "fc.bias"], ["z" if softmax else "logits"],
                         name="/fc/Gemm", transB=1),
    ]
    if softmax:  # the model gives probabilities
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], name="/softmax/Softmax", axis=-1))
    # an initializer also listed as a graph input and used by no node: the importer warns
    unused = numpy_helper.from_array(np.zeros(1, np.float32), "unused")
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE]),
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [*inits, unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="pytorch")
    onnx.save(model, str(path))
    return params


def reference_logits(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model in numpy (float64), batch norm with the running statistics."""
    x = x.astype(np.float64)
    b, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((b, K, h, w))
    for i in range(3):
        for j in range(3):
            y += np.einsum("bchw,kc->bkhw", padded[:, :, i:i + h, j:j + w], p["conv.weight"][:, :, i, j])
    c = {k: np.asarray(v, np.float64).reshape(1, -1, 1, 1) for k, v in p.items() if v.ndim == 1 or "bn" in k}
    y += c["conv.bias"]
    y = (y - c["bn.running_mean"]) / np.sqrt(c["bn.running_var"] + EPS) * c["bn.weight"] + c["bn.bias"]
    y = np.maximum(y, 0).mean(axis=(2, 3))
    return y @ p["fc.weight"].astype(np.float64).T + p["fc.bias"]


@pytest.fixture(autouse=True)
def _own_temp_folder(tmp_path, monkeypatch):
    """Converted files in this test's own temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    return write_csv_dataset(tmp_path_factory.mktemp("onnxdata"), (32, 16, 16), seed=7)


def _config(csv_data, path, **kw) -> C.Config:
    return identities.resolve_data(C.Config(dataset="csv", train_csv=str(csv_data["train"]), val_csv=str(csv_data["val"]),
                                   test_csv=str(csv_data["test"]), model_onnx=str(path), **kw))


def _eval_logits(net: Network, x: np.ndarray) -> np.ndarray:
    xv = nn.Variable(x.shape)
    y = net.logits(xv, bn="eval")
    xv.d = x
    y.forward(clear_buffer=True)
    return y.d.copy()


# --------------------------------------------------------------------------- the seam
def test_an_onnx_network_gives_the_reference_logits_with_the_stated_input_scaling(
        csv_data, tmp_path, capfd):
    path = tmp_path / "net.onnx"
    params = write_onnx(path)
    cfg = _config(csv_data, path, input_mean=(0.2,), input_std=(0.5,))
    data = engine.load_prepared(cfg, 0)
    assert data.in_shape == SHAPE  # the images are prepared at the network's 12 x 10
    eng = engine.Engine(engine.model_spec(cfg, data), 0, data, augment=False)
    net = eng.net
    # the initializers' names; BN statistics found by their place, not trained; the rest trained
    assert set(net.variables) == set(params) and set(net.trainable) == set(params) - STATISTICS
    assert net.bn_layers == [("bn.running_mean", "bn.running_var")]
    images = data.test_x[:5]
    expected = reference_logits(params, (images / 255.0 - 0.2) / 0.5)
    for b in (5, 1):  # the importer wrote batch size 1 into its Reshapes; any batch size runs
        np.testing.assert_allclose(_eval_logits(net, eng.inputs(images[:b])), expected[:b], rtol=1e-4, atol=1e-5)
    out, err = capfd.readouterr()
    assert "unused" not in out + err and "Input buffer" not in out + err  # the importer's warning


def test_a_final_softmax_is_dropped_and_an_inference_dropout_is_an_identity(tmp_path):
    path = tmp_path / "probabilities.onnx"
    params = write_onnx(path, extra="inference dropout", softmax=True)
    net = Network(NnpModel(NnpSource(str(onnx_import.converted(path)), onnx=str(path)), CLASSES), 0, SHAPE)
    assert set(net.trainable) == set(params) - STATISTICS  # not ratio, not training_mode
    x = np.random.default_rng(5).random((3, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(_eval_logits(net, x), reference_logits(params, x), rtol=1e-4, atol=1e-5)


def test_the_identity_is_the_files_bytes_and_the_conversion_happens_once(csv_data, tmp_path):
    path = tmp_path / "net.onnx"
    write_onnx(path)
    ident = _config(csv_data, path).train_identity()
    assert ident["model"] == "onnx" and ident["model_digest"] == onnx_import.digest(path)
    assert ident["input_mean"] == [0.0] and ident["input_std"] == [1.0] and "model_onnx" not in ident
    moved = tmp_path / "elsewhere" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert _config(csv_data, moved).train_identity() == ident
    assert _config(csv_data, path, input_std=(0.25,)).train_identity() != ident
    first = onnx_import.converted(path)
    mtime = first.stat().st_mtime_ns
    assert onnx_import.converted(moved) == first and first.stat().st_mtime_ns == mtime
    assert [f.name for f in first.parent.iterdir()] == [first.name]  # no temporary file left


def test_an_onnx_network_has_the_gradients_of_the_same_network_written_with_norm(tmp_path):
    """Training mode (batch statistics, running statistics moved at the file's momentum):
    the loss, its gradient and the new running statistics are those of the network
    written in nnabla with the project's norm, on the same parameters."""
    path = tmp_path / "net.onnx"
    params = write_onnx(path)
    source = NnpSource(str(onnx_import.converted(path)), onnx=str(path))
    from_onnx = Network(NnpModel(source, CLASSES), 0, SHAPE)

    def same(x, classes, norm):
        h = PF.convolution(x, K, (3, 3), pad=(1, 1), name="conv")
        h = F.relu(norm(h, "bn", eps=EPS, decay_rate=0.9))
        return PF.affine(F.global_average_pooling(h), classes, name="fc")

    written = Network(FunctionModel(same, CLASSES), 0, SHAPE)
    names = {"conv/conv/W": "conv.weight", "conv/conv/b": "conv.bias", "bn/beta": "bn.bias",
             "bn/gamma": "bn.weight", "bn/mean": "bn.running_mean", "bn/var": "bn.running_var",
             "fc/affine/W": "fc.weight", "fc/affine/b": "fc.bias"}
    assert set(written.variables) == set(names)
    for mine, theirs in names.items():
        value = params[theirs].T if mine == "fc/affine/W" else params[theirs]
        written.variables[mine].d = value.reshape(written.variables[mine].shape)
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(6, *SHAPE)).astype(np.float32), rng.integers(0, CLASSES, (6, 1))
    results = []
    for net in (from_onnx, written):
        xv, tv = nn.Variable(x.shape), nn.Variable(t.shape)
        loss = F.mean(F.softmax_cross_entropy(net.logits(xv, bn="train"), tv))
        xv.d, tv.d = x, t
        loss.forward()
        net.zero_grad()
        loss.backward()
        results.append((float(loss.d), {k: v.g.copy() for k, v in net.trainable.items()},
                        {k: net.variables[k].d.copy() for k in net.bn_state_names()}))
    (loss_a, grads_a, stats_a), (loss_b, grads_b, stats_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for mine, theirs in names.items():
        if mine in grads_b:
            g = grads_b[mine].T if mine == "fc/affine/W" else grads_b[mine]
            np.testing.assert_allclose(grads_a[theirs].reshape(g.shape), g, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_allclose(stats_a[theirs], stats_b[mine], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- end to end
def test_an_onnx_network_runs_end_to_end_and_trains_its_parameters(csv_data, tmp_path):
    path = tmp_path / "net.onnx"
    params = write_onnx(path)
    out = tmp_path / "out"
    args = small_run_args(csv_data, out, "--model-onnx", str(path), "--input-mean", "0.1",
                          "--input-std", "0.3")
    args[args.index("-e") + 1] = "1"
    assert train_infl_eval.main([*args, "--infl-epochs", "1", "--methods", "Hara", "Random"]) == 0
    for m in ("Hara", "Random"):
        assert paths.influence(out, m, 0).exists() and paths.score(out, m, 8, 0).exists()
    with h5py.File(paths.final_model(out, 0), "r") as h5:
        trained = {k: np.asarray(h5[k]) for k in params}
    for k in set(params) - {"conv.bias"}:  # the BN after the conv leaves its bias no gradient
        assert not np.allclose(trained[k], params[k]), k
    # the trained network's eval logits are the reference's on the trained parameters
    cfg = _config(csv_data, path, input_mean=(0.1,), input_std=(0.3,))
    data = engine.load_prepared(cfg, 0)
    eng = engine.Engine(engine.model_spec(cfg, data), 0, data, augment=False)
    eng.net.load_state_dict({k: v.reshape(eng.net.variables[k].shape) for k, v in trained.items()})
    images = data.test_x[:6]
    np.testing.assert_allclose(_eval_logits(eng.net, eng.inputs(images)),
                               reference_logits(trained, (images / 255.0 - 0.1) / 0.3), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kind,extra,expected", [
    ("dropout", (), "--model-onnx: dropout.onnx: ONNX node /drop/Dropout (Dropout) is in training mode"),
    ("unknown", (), "--model-onnx: unknown.onnx: ONNX node /warp/GridSample (GridSample): nnabla's "
                    "importer cannot convert it"),
    ("garbage", (), "garbage.onnx: not a readable ONNX file"),
    ("missing", (), "--model-onnx: {path}: file not found"),
    ("good", ("--model", "mlp"), "--model-onnx: given with --model; the ONNX file is the network"),
    ("good", ("--input-mean", "0.1", "0.2"), "--input-mean: 2 values for a network whose image input "
                                            "has 1 channel(s)"),
])
def test_onnx_networks_that_cannot_be_used_are_one_line_and_write_nothing(
        csv_data, tmp_path, caplog, kind, extra, expected):
    path = tmp_path / f"{kind}.onnx"
    if kind == "garbage":
        path.write_bytes(b"\x08\x01 not a model")
    elif kind != "missing":
        write_onnx(path, extra=kind if kind in ("dropout", "unknown") else None)
    out = tmp_path / "out"
    caplog.clear()
    assert train_infl_eval.main(small_run_args(csv_data, out, "--model-onnx", str(path), *extra)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected.format(path=path) in errors[0] and "\n" not in errors[0], errors
    assert not out.exists() or not any(f.is_file() for f in out.rglob("*") if f.name != ".lock")


def test_an_unknown_node_is_named_when_converting(tmp_path):
    path = tmp_path / "bad.onnx"
    write_onnx(path, extra="unknown")
    with pytest.raises(ModelError, match=r"ONNX node /warp/GridSample \(GridSample\).*not supported"):
        onnx_import.converted(path)
