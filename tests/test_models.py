"""Networks: parameter counts, seeded initialisation, the four batch-normalisation modes."""

from __future__ import annotations

import math

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from sgd_influence.models import ModelSpec, Network, input_variables, snapshot_nbytes

SHAPE = (3, 8, 8)  # three pooling stages: 8 -> 1


def _net(arch="cifarnet", seed=0, width=2, shape=SHAPE, classes=5) -> Network:
    return Network(ModelSpec(arch, shape, classes, width), seed)


def _batch(n=6, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def _logits(net: Network, x: np.ndarray, bn: str) -> np.ndarray:
    xv, _ = input_variables(len(x), x.shape[1:])
    out = net.logits(xv, bn=bn)
    xv.d = x
    out.forward(clear_buffer=True)
    return out.d.copy()


def _running(net: Network) -> dict[str, np.ndarray]:
    return {k: v.d.copy() for k, v in net.variables.items() if k.endswith(("/mean", "/var"))}


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("width,channels,classes", [(32, 1, 10), (4, 3, 7)])
def test_cifarnet_parameter_count_by_hand(width, channels, classes):
    side = 32
    c1, c2, c3 = width, 2 * width, 4 * width
    convs = [(channels, c1), (c1, c1), (c1, c2), (c2, c2), (c2, c3), (c3, c3)]
    conv = sum(9 * cin * cout + cout for cin, cout in convs)
    bn = 2 * (c1 + c2 + c3)  # beta and gamma
    fc = c3 * (side // 8) ** 2 * classes + classes
    net = _net(width=width, shape=(channels, side, side), classes=classes)
    assert net.num_trainable() == conv + bn + fc
    state = net.state_dict()
    assert sum(a.size for a in state.values()) == conv + bn + fc + bn  # + running mean and var
    assert snapshot_nbytes(state) == 4 * (conv + 2 * bn + fc)
    if (width, channels, classes) == (32, 1, 10):
        assert net.num_trainable() == 307_370  # the paper's MNIST network


def test_logreg_and_mlp_parameter_counts():
    d, k = 3 * 8 * 8, 5
    assert _net("logreg").num_trainable() == d * k + k
    assert _net("mlp").num_trainable() == d * 64 + 64 + 64 * k + k
    assert not _net("logreg").has_batchnorm() and _net().has_batchnorm()


def test_initialisation_is_seeded_and_glorot_bounded():
    a, b, c = _net(seed=3).state_dict(), _net(seed=3).state_dict(), _net(seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1/W"], c["conv1/W"])
    w = a["conv3/W"]  # (4, 2, 3, 3): fan_in 2*9, fan_out 4*9
    assert np.abs(w).max() <= math.sqrt(6.0 / (18 + 36))
    assert np.abs(w).max() > 0.5 * math.sqrt(6.0 / (18 + 36))
    for name in ("conv1/b", "bn1/beta", "bn1/mean"):
        assert not a[name].any()
    for name in ("bn1/gamma", "bn1/var"):
        assert (a[name] == 1).all()
    assert not _net("logreg", seed=5).get_flat().any()  # logreg starts at zero


def test_flat_round_trip_and_state_checks():
    net = _net()
    flat = np.random.default_rng(0).standard_normal(net.num_trainable()).astype(np.float32)
    net.set_flat(flat)
    np.testing.assert_array_equal(net.get_flat(), flat)
    state = net.state_dict()
    bad = dict(state)
    bad["fc/W"] = bad["fc/W"][:1]
    with pytest.raises(ValueError, match="fc/W"):
        net.load_state_dict(bad)
    del bad["fc/W"]
    with pytest.raises(KeyError, match="fc/W"):
        net.load_state_dict(bad)
    with pytest.raises(ValueError, match="--width"):
        ModelSpec("cifarnet", SHAPE, 5, 0)
    with pytest.raises(ValueError, match="bn mode"):
        net.logits(nn.Variable((1, *SHAPE)), bn="frozen")


# --------------------------------------------------------------------------- BN modes
def test_train_mode_updates_running_statistics_by_the_decay_rule():
    net = _net()
    x = _batch()
    before = _running(net)
    _logits(net, x, "train")
    # the first BN normalises conv1's output: compute its batch statistics by hand
    xv = nn.Variable.from_numpy_array(x)
    h = F.convolution(xv, nn.Variable.from_numpy_array(net.variables["conv1/W"].d),
                      nn.Variable.from_numpy_array(net.variables["conv1/b"].d), pad=(1, 1))
    h.forward()
    a = h.d.astype(np.float64)
    mean = a.mean(axis=(0, 2, 3))
    var_unbiased = a.var(axis=(0, 2, 3), ddof=1)
    after = _running(net)
    want_mean = 0.9 * before["bn1/mean"].ravel() + 0.1 * mean
    want_var = 0.9 * before["bn1/var"].ravel() + 0.1 * var_unbiased
    np.testing.assert_allclose(after["bn1/mean"].ravel(), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["bn1/var"].ravel(), want_var, rtol=1e-5)
    assert all(not np.array_equal(after[k], before[k]) for k in before)


def test_batch_mode_equals_train_output_and_keeps_running_statistics():
    net = _net()
    x = _batch()
    before = _running(net)
    batch = _logits(net, x, "batch")
    assert all(np.array_equal(v, before[k]) for k, v in _running(net).items())
    train = _logits(net, x, "train")
    np.testing.assert_allclose(batch, train, rtol=1e-5, atol=1e-6)


def test_eval_mode_is_per_sample_and_uses_running_statistics():
    net = _net()
    x = _batch()
    _logits(net, x, "train")  # running statistics away from their initial values
    full = _logits(net, x, "eval")
    one = _logits(net, x[2:3], "eval")
    np.testing.assert_allclose(one[0], full[2], rtol=1e-5, atol=1e-6)  # no batch-mate effect
    net.variables["bn2/mean"].d = net.variables["bn2/mean"].d + 1.0
    assert not np.allclose(_logits(net, x, "eval"), full)
    # batch statistics, by contrast, depend on the batch-mates
    assert not np.allclose(_logits(net, x[2:3], "batch")[0], _logits(net, x, "batch")[2])


def test_instance_mode_equals_batch_mode_one_sample_at_a_time():
    net = _net()
    x = _batch()
    inst = _logits(net, x, "instance")
    ones = np.concatenate([_logits(net, x[i : i + 1], "batch") for i in range(len(x))])
    np.testing.assert_allclose(inst, ones, rtol=1e-4, atol=1e-5)
