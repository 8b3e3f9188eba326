"""Neural Network Console networks (``--model-nnp FILE.nnp``): an .nnp written here with
nnabla's own saver from a parametric-function network with batch normalisation, read
back through the model seam (same logits as the PF network on the same parameters), run
end to end from a small CSV data set, identified by its bytes, and the refusals."""

from __future__ import annotations

import logging
import shutil
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S
import numpy as np
import pandas as pd
import pytest
from nnabla.utils.save import save
from synth import small_run_args, write_csv_dataset

import train_infl_eval
from sgd_influence import config as C
from sgd_influence import engine, identities, paths
from sgd_influence.models import FunctionModel, ModelError, Network, NnpModel, NnpSource

N_TRAIN, N_VAL, N_TEST = 48, 24, 24
BATCH = 8  # the batch size the file is saved with; the project builds it at any other


def pf_net(x, classes: int, batch_stat: bool, *, flat: bool = False, dropout: bool = False,
           bn: dict | None = None):
    """conv -> PF.batch_normalization (``bn``: its eps, decay_rate) -> relu -> max pool ->
    affine (flat: affine first)."""
    bn = bn or {}
    if flat:
        h = F.relu(PF.batch_normalization(PF.affine(x, 8, name="fc0"), batch_stat=batch_stat, name="bn",
                                          **bn))
    else:
        h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name="conv")
        h = F.relu(PF.batch_normalization(h, batch_stat=batch_stat, name="bn", **bn))
        if dropout:
            h = F.dropout(h, 0.5)
        h = F.max_pooling(h, (4, 4))
    return PF.affine(h, classes, name="fc")


def save_nnp(path: Path, *, shape=(1, 28, 28), classes: int = 4, flat: bool = False,
             dropout: bool = False, raw_pixels: bool = False, seed: int = 0,
             bn: dict | None = None, optimizer: str = "set") -> OrderedDict:
    """Write an .nnp (training network, optimizer, data set, runtime executor) the way
    nnabla.utils.save.save expects; returns the parameter scope it was made in.
    ``optimizer``: "set" (the solver has the parameters), "none" (no optimizer, every
    parameter stored with need_grad False), "unset" (a solver saved before set_parameters:
    save lists every parameter with learning-rate multiplier 0)."""
    scope: OrderedDict = OrderedDict()
    rng = np.random.default_rng(seed)
    with nn.parameter_scope("", scope):
        x = nn.Variable((BATCH, int(np.prod(shape))) if flat else (BATCH, *shape))
        t = nn.Variable((BATCH, 1))
        y = pf_net(x, classes, True, flat=flat, dropout=dropout, bn=bn)
        loss = F.mean(F.softmax_cross_entropy(y, t))
        for name, v in nn.get_parameters(grad_only=False).items():  # BN statistics that matter
            d = rng.uniform(0.5, 2.0, v.shape) if name.endswith("/var") else rng.normal(0, 0.5, v.shape)
            v.d = d.astype(np.float32)
        solver = S.Sgd(0.1)
        if optimizer == "set":
            solver.set_parameters(nn.get_parameters())
        optimizers = [
            {"name": "optimizer", "solver": solver, "network": "training", "dataset": "train",
             "weight_decay": 0, "lr_decay": 1, "lr_decay_interval": 1, "update_interval": 1}]
        save(str(path), {
            "networks": [
                {"name": "training", "batch_size": BATCH, "outputs": {"loss": loss},
                 "names": {"x": x, "y": t}},
                {"name": "runtime", "batch_size": BATCH, "outputs": {"y": y}, "names": {"x": x}}],
            "optimizers": optimizers if optimizer != "none" else [],
            "datasets": [
                {"name": "train", "uri": "train.csv", "variables": {"x": x, "y": t}, "shuffle": True,
                 "batch_size": BATCH, "no_image_normalization": raw_pixels}],
            "executors": [{"name": "runtime", "network": "runtime", "data": ["x"], "output": ["y"]}],
        })
    if optimizer == "none":  # each parameter stored with need_grad False, as nnabla's ONNX importer does
        _edit_nnp(path, parameters=lambda h5: [h5[k].attrs.__setitem__("need_grad", False)
                                               for k in _datasets(h5)])
    return scope


def _edit_nnp(path: Path, network=None, parameters=None) -> None:
    """Rewrite an .nnp in place: ``network(proto)`` edits its network description,
    ``parameters(h5)`` its parameter file."""
    import io

    from google.protobuf import text_format
    from nnabla.utils import nnabla_pb2

    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    if network is not None:
        proto = nnabla_pb2.NNablaProtoBuf()
        text_format.Merge(files["network.nntxt"].decode(), proto)
        network(proto)
        files["network.nntxt"] = text_format.MessageToString(proto).encode()
    if parameters is not None:
        buf = io.BytesIO(files["parameter.h5"])
        with h5py.File(buf, "r+") as h5:
            parameters(h5)
        files["parameter.h5"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


@pytest.fixture(scope="module")
def nnp_file(tmp_path_factory) -> tuple[Path, OrderedDict]:
    path = tmp_path_factory.mktemp("nnp") / "net.nnp"
    return path, save_nnp(path)


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    return write_csv_dataset(tmp_path_factory.mktemp("nnpdata"), (N_TRAIN, N_VAL, N_TEST), seed=5)


_args = small_run_args


def _pf_logits(scope, x: np.ndarray, batch_stat: bool, bn: dict | None = None) -> np.ndarray:
    with nn.parameter_scope("", scope):
        xv = nn.Variable(x.shape)
        y = pf_net(xv, 4, batch_stat, bn=bn)
    xv.d = x
    y.forward(clear_buffer=True)
    return y.d.copy()


# --------------------------------------------------------------------------- the seam
def test_an_nnp_network_gives_the_pf_networks_logits_on_its_parameters(nnp_file):
    path, scope = nnp_file
    with nn.parameter_scope("", scope):
        stored = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    model = NnpModel(NnpSource(str(path)))
    assert model.layout.network == "training" and model.layout.image == "x"
    assert model.in_shape == (1, 28, 28) and model.pixel_scale == pytest.approx(1 / 255)
    net = Network(model, 0, model.in_shape)
    # the .nnp's names in the network's scope, its stored values, nothing left in the global one
    assert list(net.variables) == list(stored) and not nn.get_parameters(grad_only=False)
    for k, v in net.variables.items():
        np.testing.assert_array_equal(v.d, stored[k])
    assert set(net.trainable) == set(stored) - {"bn/bn/mean", "bn/bn/var"}
    assert net.bn_layers == [("bn/bn/mean", "bn/bn/var")]
    rng = np.random.default_rng(1)
    for b in (1, 5):  # any batch size, not only the file's
        x = rng.random((b, 1, 28, 28)).astype(np.float32)
        xv = nn.Variable(x.shape)
        y = net.logits(xv, bn="eval")
        xv.d = x
        y.forward(clear_buffer=True)
        np.testing.assert_allclose(y.d, _pf_logits(scope, x, False), rtol=1e-5, atol=1e-6)
    x = rng.random((6, 1, 28, 28)).astype(np.float32)
    xv = nn.Variable(x.shape)
    y = net.logits(xv, bn="batch")  # batch statistics, the running ones untouched
    xv.d = x
    y.forward(clear_buffer=True)
    np.testing.assert_allclose(y.d, _pf_logits(OrderedDict(_copy(scope)), x, True), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(net.variables["bn/bn/mean"].d, stored["bn/bn/mean"])


def test_bn_layers_keep_the_files_epsilon_and_decay_rate(tmp_path):
    """A console network's BN layers with their own epsilon and decay rate: the same eval
    logits as nnabla's layer with them, and the running statistics move at the file's rate."""
    own = {"eps": 1e-2, "decay_rate": 0.8}
    path = tmp_path / "own_bn.nnp"
    scope = save_nnp(path, bn=own)
    net = Network(NnpModel(NnpSource(str(path))), 0, (1, 28, 28))
    assert net.bn_decays == pytest.approx([0.8, 0.8])
    x = np.random.default_rng(2).random((5, 1, 28, 28)).astype(np.float32)
    xv = nn.Variable(x.shape)
    y = net.logits(xv, bn="eval")
    xv.d = x
    y.forward(clear_buffer=True)
    np.testing.assert_allclose(y.d, _pf_logits(scope, x, False, own), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y.d, _pf_logits(scope, x, False), rtol=1e-4, atol=1e-5)  # nnabla's eps differs
    before = net.variables["bn/bn/mean"].d.copy()
    y = net.logits(xv, bn="train")  # a training forward moves the running statistics
    y.forward(clear_buffer=True)
    copy = OrderedDict(_copy(scope))
    _pf_logits(copy, x, True, own)
    with nn.parameter_scope("", copy):
        moved = nn.get_parameters(grad_only=False)["bn/bn/mean"].d
    np.testing.assert_allclose(net.variables["bn/bn/mean"].d, moved, rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved, before)


def test_bn_parameters_are_found_by_their_place_and_data_reshapes_run_at_every_batch_size(tmp_path):
    """As nnabla's ONNX importer writes a network: BN parameters named freely (not
    PREFIX/beta ...), a Reshape of the data written for batch size 1."""
    rng = np.random.default_rng(4)
    scope: OrderedDict = OrderedDict()
    with nn.parameter_scope("", scope):
        x = nn.Variable((1, 1, 6, 6))
        h = PF.convolution(x, 2, (3, 3), name="conv")
        p = {n: nn.parameter.get_parameter_or_create(
                 n, (1, 2, 1, 1), rng.uniform(0.5, 1.5, (1, 2, 1, 1)).astype(np.float32),
                 need_grad=not n.startswith("stat"))
             for n in ("shift", "scale", "stat_a", "stat_b")}
        h = F.relu(F.batch_normalization(h, p["shift"], p["scale"], p["stat_a"], p["stat_b"],
                                         batch_stat=False, eps=1e-3))
        y = PF.affine(F.reshape(h, (1, 32)), 3, name="fc")
        path = tmp_path / "importer_like.nnp"
        save(str(path), {"networks": [{"name": "net", "batch_size": 1, "outputs": {"y": y}, "names": {"x": x}}],
                         "executors": [{"name": "runtime", "network": "net", "data": ["x"], "output": ["y"]}]},
             variable_batch_size=False)
    model = NnpModel(NnpSource(str(path)))
    assert dict(model.layout.reshapes) == {next(f for f in model.layout.functions if "Reshape" in f): (32,)}
    net = Network(model, 0, (1, 6, 6))
    assert net.bn_layers == [("stat_a", "stat_b")] and set(net.trainable) == set(net.variables) - {"stat_a", "stat_b"}
    images = rng.random((5, 1, 6, 6)).astype(np.float32)
    expected = []
    for image in images:  # the file's own graph, one sample at a time
        x.d = image[None]
        y.forward(clear_buffer=True)
        expected.append(y.d[0].copy())
    xv = nn.Variable(images.shape)
    out = net.logits(xv, bn="eval")
    xv.d = images
    out.forward(clear_buffer=True)
    np.testing.assert_allclose(out.d, np.array(expected), rtol=1e-5, atol=1e-6)


def _copy(scope):
    """A scope of copies (a PF graph with batch_stat=True moves the running statistics)."""
    out: OrderedDict = OrderedDict()
    with nn.parameter_scope("", scope):
        params = nn.get_parameters(grad_only=False)
    with nn.parameter_scope("", out):
        for k, v in params.items():
            nn.parameter.get_parameter_or_create(k, v.shape, v.d.copy(), need_grad=v.need_grad)
    return out


def test_no_init_from_nnp_is_a_seeded_fresh_start_and_the_runtime_network_is_the_same(nnp_file):
    path, _ = nnp_file
    fresh = [Network(NnpModel(NnpSource(str(path), from_file=False)), s, (1, 28, 28)) for s in (3, 3, 4)]
    a, b, c = (n.state_dict() for n in fresh)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["fc/affine/W"], c["fc/affine/W"])
    assert not a["conv/conv/b"].any() and (a["bn/bn/gamma"] == 1).all() and (a["bn/bn/var"] == 1).all()
    stored = Network(NnpModel(NnpSource(str(path))), 0, (1, 28, 28)).state_dict()
    assert not np.array_equal(a["conv/conv/W"], stored["conv/conv/W"])
    runtime = NnpModel(NnpSource(str(path), network="runtime"))
    assert runtime.layout.logits == "y" and runtime.layout.params == tuple(stored)


def test_the_files_data_set_decides_the_pixel_scale_and_its_input_the_image_size(csv_data, tmp_path):
    path = tmp_path / "raw.nnp"
    save_nnp(path, shape=(1, 20, 24), raw_pixels=True)
    cfg = identities.resolve_data(C.Config(dataset="csv", train_csv=str(csv_data["train"]), val_csv=str(csv_data["val"]),
                                  test_csv=str(csv_data["test"]), model_nnp=str(path)))
    data = engine.load_prepared(cfg, 0)
    assert data.in_shape == (1, 20, 24)  # not the project's 32x32
    eng = engine.Engine(engine.model_spec(cfg, data), 0, data, augment=False)
    assert eng.pixel_scale == 1.0
    np.testing.assert_array_equal(eng.inputs(data.test_x[:3]), data.test_x[:3].astype(np.float32))
    loss, acc = eng.evaluate_split("test")
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_the_identity_is_the_files_bytes_not_its_path(nnp_file, tmp_path):
    path, _ = nnp_file
    ident = identities.resolve_data(C.Config(model_nnp=str(path))).train_identity()
    assert ident["model"] == "nnp" and ident["init_from_nnp"] is True and ident["nnp_network"] is None
    assert str(path) not in str(ident) and "model_nnp" not in ident
    moved = tmp_path / "elsewhere.nnp"
    shutil.copy(path, moved)
    assert identities.resolve_data(C.Config(model_nnp=str(moved))).train_identity() == ident
    assert identities.resolve_data(C.Config(model_nnp=str(path), init_from_nnp=False)).train_identity() != ident
    assert "init_from_nnp" not in C.Config().train_identity()  # other networks' identity unchanged


# --------------------------------------------------------------------------- what is trained
@pytest.mark.parametrize("optimizer", ["none", "empty"])
def test_without_an_optimizer_or_with_one_listing_nothing_every_parameter_but_bn_statistics_trains(
        csv_data, tmp_path, optimizer):
    path = tmp_path / f"{optimizer}.nnp"
    save_nnp(path, optimizer="none" if optimizer == "none" else "set")
    if optimizer == "empty":  # an optimizer listing no parameter at all
        _edit_nnp(path, network=lambda proto: proto.optimizer[0].ClearField("parameter_variable"))
    stored = NnpModel(NnpSource(str(path)))._loader.g.get_parameters(grad_only=False)
    assert all(not v.need_grad for v in stored.values()) == (optimizer == "none")
    cfg = identities.resolve_data(C.Config(dataset="csv", train_csv=str(csv_data["train"]), val_csv=str(csv_data["val"]),
                                  test_csv=str(csv_data["test"]), model_nnp=str(path)))
    data = engine.load_prepared(cfg, 0)
    eng = engine.Engine(engine.model_spec(cfg, data), 0, data, augment=False)
    statistics = {"bn/bn/mean", "bn/bn/var"}
    assert set(eng.net.trainable) == set(eng.net.variables) - statistics
    before = eng.net.state_dict()
    eng.step(np.arange(8), None, 0.5, 8)
    after = eng.net.state_dict()
    for name in ("conv/conv/W", "bn/bn/beta", "bn/bn/gamma", "fc/affine/W", "fc/affine/b"):
        assert not np.array_equal(before[name], after[name]), name


def test_a_network_built_without_trainable_parameters_is_refused():
    def frozen(x, classes, norm):
        w = nn.parameter.get_parameter_or_create("w", (36, classes), np.ones((36, classes), np.float32),
                                                 need_grad=False)
        return F.affine(x, w)

    with pytest.raises(ModelError, match="network frozen: nothing to train"):
        Network(FunctionModel(frozen, 4), 0, (1, 6, 6))


# --------------------------------------------------------------------------- end to end
def test_an_nnp_network_runs_end_to_end_and_the_same_file_elsewhere_is_the_same_run(
        nnp_file, csv_data, tmp_path, caplog):
    path, _ = nnp_file
    out = tmp_path / "out"
    assert train_infl_eval.main(_args(csv_data, out, "--model-nnp", str(path))) == 0
    with h5py.File(paths.final_model(out, 0), "r") as h5:
        assert {"conv/conv/W", "bn/bn/mean", "bn/bn/var", "fc/affine/W"} <= set(_datasets(h5))
        assert h5["conv/conv/W"].shape == (4, 1, 3, 3)
    for m in ("Hara", "Ours", "Random"):
        assert paths.influence(out, m, 0).exists() and paths.score(out, m, 8, 0).exists()
    hara = pd.read_csv(paths.influence(out, "Hara", 0))["influence"]  # exact BN walk on the file's BN
    assert len(hara) == N_TRAIN and np.isfinite(hara).all() and hara.std() > 0
    record = paths.record(out, 0).stat().st_mtime_ns
    moved = tmp_path / "copy" / "renamed.nnp"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sgd_influence"):
        assert train_infl_eval.main(_args(csv_data, out, "--model-nnp", str(moved))) == 0
    assert "nothing to do" in caplog.text and paths.record(out, 0).stat().st_mtime_ns == record


def _datasets(h5) -> list[str]:
    names: list[str] = []
    h5.visit(lambda k: names.append(k) if isinstance(h5[k], h5py.Dataset) else None)
    return names


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kind,extra,expected", [
    ("flat", (), "no image input"),
    ("dropout", (), "(Dropout) draws new random numbers"),
    ("rgb", (), "is 3x28x28 (C, H, W); the data set's images are 1x28x28"),
    ("good", ("--nnp-network", "nothere"), "has no network 'nothere'"),
    ("good", ("--model", "mlp"), "give one of them"),
    ("garbage", (), "not a readable .nnp file"),
    ("unset", (), "--model-nnp: unset.nnp: network 'training' would train nothing: its optimizer "
                  "'optimizer' gives each of its 6 parameters learning-rate multiplier 0"),
    ("damaged", (), "Bad CRC-32 for file 'network.nntxt'"),
])
def test_nnp_networks_that_cannot_be_used_are_one_line_and_write_nothing(
        csv_data, tmp_path, caplog, kind, extra, expected):
    path = tmp_path / f"{kind}.nnp"
    if kind == "garbage":
        path.write_bytes(b"not a zip")
    elif kind == "damaged":  # one bit of a member's data flipped: its CRC no longer matches
        save_nnp(path)
        with zipfile.ZipFile(path) as z:
            offset = z.getinfo("network.nntxt").header_offset
        raw = bytearray(path.read_bytes())
        name_len, extra_len = struct.unpack("<HH", raw[offset + 26:offset + 30])
        raw[offset + 30 + name_len + extra_len + 100] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        save_nnp(path, flat=kind == "flat", dropout=kind == "dropout",
                 shape=(3, 28, 28) if kind == "rgb" else (1, 28, 28),
                 optimizer="unset" if kind == "unset" else "set")
    out = tmp_path / "out"
    caplog.clear()
    assert train_infl_eval.main(_args(csv_data, out, "--model-nnp", str(path), *extra)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors
    assert not out.exists() or not any(f.is_file() for f in out.rglob("*") if f.name != ".lock")


def test_a_model_error_names_the_layer(tmp_path):
    path = tmp_path / "drop.nnp"
    save_nnp(path, dropout=True)
    with pytest.raises(ModelError, match=r"network drop.nnp:training: layer \S*Dropout\S* \(Dropout\)"):
        NnpModel(NnpSource(str(path)))
