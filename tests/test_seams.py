"""The two seams end to end: a network and an influence method defined in this file
alone (no edit of the package) run through the whole pipeline; a user's network file
(``--model FILE.py:FUNCTION``) the same way, with its identity and the refusals of
networks that cannot be used."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pandas as pd
import pytest
from synth import small_run_args, write_csv_dataset

import train_infl_eval
from sgd_influence import config as C
from sgd_influence import identities, paths, preprocess, registry, store
from sgd_influence.methods import register as register_method
from sgd_influence.models import register as register_model

N_TRAIN, N_VAL, N_TEST = 48, 24, 24


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    return write_csv_dataset(tmp_path_factory.mktemp("seamdata"), (N_TRAIN, N_VAL, N_TEST), seed=3)


_args = small_run_args


class TinyNet:
    """conv -> norm -> softplus -> pool -> affine, with nnabla's parametric functions."""

    name = "tinynet"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def build(self, x, norm):
        h = PF.convolution(x, 3, (3, 3), pad=(1, 1), name="c1")
        h = F.average_pooling(F.softplus(norm(h, "n1"), beta=5.0), (4, 4))
        return PF.affine(h, self.num_classes, name="out")

    def export_name(self, name: str) -> str:
        return name


class TrainingLoss:
    """A throwaway method: the negative training loss at the final model (high loss first)."""

    name, color, needs = "TrainingLoss", "tab:gray", "final"

    def settings(self, cfg) -> dict:
        return {"lr": cfg.lr}

    def scores(self, ctx):
        net = ctx.final_engine().net
        d = ctx.data
        x = nn.Variable((d.n_train, *d.in_shape))
        t = nn.Variable((d.n_train, 1))
        loss = F.softmax_cross_entropy(net.logits(x, bn="eval"), t)
        x.d, t.d = preprocess.normalize(d.train_x), d.train_y[:, None]
        loss.forward(clear_buffer=True)
        values = loss.d[:, 0].astype(np.float64)
        return -values, {"mean_loss": float(values.mean())}


@pytest.fixture
def plugins():
    register_model("tinynet", lambda spec: TinyNet(spec.num_classes))
    register_method(TrainingLoss())
    yield
    registry.models.unregister("tinynet")
    registry.methods.unregister("TrainingLoss")


def test_a_network_and_a_method_from_this_file_run_end_to_end(plugins, csv_data, tmp_path):
    out = tmp_path / "out"
    code = train_infl_eval.main(_args(csv_data, out, "--model", "tinynet",
                                      "--methods", "Hara", "Ours", "TrainingLoss", "Random"))
    assert code == 0
    with h5py.File(paths.final_model(out, 0), "r") as h5:
        names = set()
        h5.visit(lambda k: names.add(k) if isinstance(h5[k], h5py.Dataset) else None)
    assert {"c1/conv/W", "c1/conv/b", "n1/beta", "n1/gamma", "n1/mean", "n1/var",
            "out/affine/W"} <= names
    for m in ("Hara", "Ours", "TrainingLoss", "Random"):
        df = pd.read_csv(paths.influence(out, m, 0))
        assert len(df) == N_TRAIN and df["influence"].is_monotonic_increasing
        assert sorted(df["datasource_index"]) == list(range(N_TRAIN))
        for n in (4, 8):
            assert paths.score(out, m, n, 0).exists()
    facts = pd.read_json(paths.influence_stats(out, "TrainingLoss", 0), typ="series")
    assert facts["mean_loss"] > 0
    summary = pd.read_csv(paths.summary(out))
    assert {"Hara", "Ours", "TrainingLoss", "Random", "No Removal"} <= set(summary["method"])
    # the registry's order decides the table's order: the new method after the built-in walks
    order = [m for m in dict.fromkeys(summary["method"]) if m != "No Removal"]
    assert order.index("TrainingLoss") > order.index("Ours")
    # exact Hara on a BN network of the user's: its scores are not the trivial ones
    hara = pd.read_csv(paths.influence(out, "Hara", 0))["influence"]
    assert np.isfinite(hara).all() and hara.std() > 0


NETWORK = '''
import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name="conv")
    h = F.relu(norm(h, "bn"))
    h = F.max_pooling(h, (4, 4))
    return PF.affine(h, num_classes, name="fc")


def wrong_shape(x, num_classes, norm):
    return PF.affine(x, num_classes + 1, name="fc")


def own_bn(x, num_classes, norm):
    h = PF.batch_normalization(PF.convolution(x, 2, (3, 3), pad=(1, 1)))
    return PF.affine(h, num_classes)


def bad_eps(x, num_classes, norm):
    return PF.affine(norm(PF.convolution(x, 2, (3, 3), pad=(1, 1)), "bn", eps=0), num_classes)


def with_dropout(x, num_classes, norm):
    return PF.affine(F.dropout(x, 0.5), num_classes, name="fc")


def with_noise(x, num_classes, norm):
    return PF.affine(x + 0.1 * F.randn(shape=x.shape), num_classes, name="fc")


def with_numpy_constant(x, num_classes, norm):
    import numpy as np
    import nnabla as nn

    c = nn.Variable.from_numpy_array(np.random.randn(*x.shape[1:]).astype("float32")[None])
    return PF.affine(x * F.broadcast(c, x.shape), num_classes, name="fc")
'''


def _network_file(folder: Path, text: str = NETWORK) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mynet.py"
    path.write_text(text)
    return path


def test_a_network_file_runs_is_identified_by_its_bytes_and_keeps_its_names(csv_data, tmp_path, caplog):
    net = _network_file(tmp_path / "a")
    out = tmp_path / "out"
    assert train_infl_eval.main(_args(csv_data, out, "--model", f"{net}:net")) == 0
    with h5py.File(paths.final_model(out, 0), "r") as h5:
        assert "conv/conv/W" in h5 and "bn/mean" in h5 and "fc/affine/W" in h5
    record = paths.record(out, 0).stat().st_mtime_ns
    # the same file elsewhere is the same run: everything is reused
    moved = _network_file(tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sgd_influence"):
        assert train_infl_eval.main(_args(csv_data, out, "--model", f"{moved}:net")) == 0
    assert paths.record(out, 0).stat().st_mtime_ns == record
    assert "nothing to do" in caplog.text
    # an edited network is another run: trained anew, the first kept in the store
    moved.write_text(NETWORK.replace("4, (3, 3)", "5, (3, 3)"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sgd_influence"):
        assert train_infl_eval.main(_args(csv_data, out, "--model", f"{moved}:net")) == 0
    assert "done: train seed 0" in caplog.text
    digests = {e.identity["model_digest"] for e in store.entries(out, "train")}
    assert len(digests) == 2


@pytest.mark.parametrize("model,expected", [
    ("{dir}/missing.py:net", "network file not found"),
    ("{net}:nothere", "no function 'nothere'"),
    ("{net}:wrong_shape", "expected one per class"),
    ("{net}:own_bn", "call the norm(h, name) argument instead"),
    ("{net}:bad_eps", "norm(h, 'bn'): eps: expected a positive number, got 0"),
    ("{net}:with_dropout", "its output differs between two evaluations on one batch"),
    ("{net}:with_noise", "its output differs between two evaluations on one batch"),
    ("{net}:with_numpy_constant", "its output differs between two evaluations on one batch"),
])
def test_networks_that_cannot_be_used_are_one_line_and_write_nothing(csv_data, tmp_path, caplog,
                                                                     model, expected):
    net = _network_file(tmp_path / "n")
    out = tmp_path / "out"
    caplog.clear()
    code = train_infl_eval.main(_args(csv_data, out, "--model", model.format(dir=tmp_path, net=net)))
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors
    assert not out.exists() or not any(f.is_file() for f in out.rglob("*") if f.name != ".lock")


def test_the_spine_computes_what_the_pipeline_computes(csv_data, tmp_path):
    from sgd_influence import cli, spine

    out = tmp_path / "pipeline"
    args = _args(csv_data, out, "--model", "cifarnet", "--width", "2")
    assert train_infl_eval.main(args) == 0
    cfg = cli.phase_config(cli.phase_parser("spine", None, "pipeline").parse_args(args))
    rows = spine.run_trial(C.replace(cfg, output=str(tmp_path / "spine")), 0)
    assert len(rows) == 3 * 3  # Hara, Ours, Random x n = 0, 4, 8
    for r in rows.itertuples():
        want = pd.read_csv(paths.score(out, r.method, r.n, 0)).iloc[-1]
        for col in ("val_loss", "test_loss", "val_accuracy", "test_accuracy"):
            assert getattr(r, col) == pytest.approx(want[col], rel=1e-12, abs=0), (r.method, r.n, col)


def test_the_readme_network_runs_as_written(csv_data, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own network", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    net = tmp_path / "net.py"
    net.write_text(code)
    out = tmp_path / "out"
    assert train_infl_eval.main(_args(csv_data, out, "--model", f"{net}:net", "--methods", "Ours",
                                      "Random")) == 0
    assert len(pd.read_csv(paths.influence(out, "Ours", 0))) == N_TRAIN


SMOOTH_NETWORK = '''
import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name="c1")
    h = F.average_pooling(F.softplus(norm(h, "n1"), beta=5.0), (2, 2))
    h = PF.convolution(h, 8, (3, 3), pad=(1, 1), name="c2")
    h = F.average_pooling(F.softplus(norm(h, "n2"), beta=5.0), (4, 4))
    return PF.affine(h, num_classes, name="fc")
'''


@pytest.mark.slow
def test_leave_one_out_goal_on_a_user_network(tmp_path):
    """Exact Hara on a network of the user's (two convolutions with norm, softplus,
    average pooling), decayed end, 128 mnist5k samples: its scores against 40 real
    leave-one-out replays of the last epoch reach the goal set for cifarnet,
    Kendall tau >= 0.8 and Pearson >= 0.9."""
    from scipy.stats import kendalltau, pearsonr
    from synth import mnist5k_subset
    from test_exact_bn import _window_loo

    from sgd_influence.engine import prepare
    from sgd_influence.infl import compute_scores
    from sgd_influence.train import run_training
    from sgd_influence.trajectory import Record

    net = tmp_path / "smooth_net.py"
    net.write_text(SMOOTH_NETWORK)
    cfg = identities.resolve_data(C.Config(output=str(tmp_path / "out"), model=f"{net}:net", n_epochs=4,
                                  infl_epochs=1, batch_size=16, lr=0.05, lr_schedule="cosine",
                                  lr_decay_epochs=2, augment=False, methods=("Hara",)).validate())
    data = prepare(mnist5k_subset(128, 500, 10), 0)
    run_training(cfg, 0, data)
    rec = Record.load(paths.record(cfg.output, 0))
    samples = rec.indices[rec.window(1).start:].ravel()[::3][:40]
    real = _window_loo(cfg, data, samples)
    est = compute_scores(cfg, 0, "Hara", data)[samples]
    tau, r = kendalltau(est, real)[0], pearsonr(est, real)[0]
    print("user network", tau, r)
    assert tau >= 0.8 and r >= 0.9
