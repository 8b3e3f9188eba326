"""The engine: one SGD step and the evaluation against hand-computed softmax regression."""

from __future__ import annotations

import numpy as np
import pytest
from synth import make_dataset

from sgd_influence import config as C
from sgd_influence import engine as E
from sgd_influence import preprocess
from sgd_influence.models import ModelSpec


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    return E.prepare(make_dataset(40, 20, 260, seed=1, side=8), 1)


def _logreg(data, augment=True):
    eng = E.Engine(ModelSpec("logreg", data.in_shape, data.num_classes), 0, data, augment=augment)
    rng = np.random.default_rng(2)  # away from the zero start, so every term matters
    eng.net.set_flat((0.05 * rng.standard_normal(eng.net.num_trainable())).astype(np.float32))
    return eng


def _by_hand(W, b, x, y):
    """Mean cross-entropy, its gradient (dW, db) and the number correct, in float64."""
    X = x.reshape(len(y), -1).astype(np.float64)
    p = _softmax(X @ W + b)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    r = p.copy()
    r[np.arange(len(y)), y] -= 1.0
    return loss, X.T @ r / len(y), r.mean(axis=0), int((p.argmax(axis=1) == y).sum())


@pytest.mark.parametrize("full_size", [8, 20])  # 20: a replay step from which 12 samples were removed
def test_step_is_a_hand_computed_sgd_update(data, full_size):
    eng = _logreg(data)
    W0, b0 = (eng.net.trainable[k].d.astype(np.float64) for k in ("fc/W", "fc/b"))
    idx = np.array([3, 17, 0, 25, 9, 31, 12, 6])
    seeds = preprocess.augmentation_seeds(0, np.arange(8))
    lr = 0.3
    x = preprocess.batch_inputs(data.train_x[idx], seeds)  # the recorded augmentation
    loss, gW, gb, correct = _by_hand(W0, b0, x, data.train_y[idx])
    got_loss, got_correct = eng.step(idx, seeds, lr, full_size)
    scale = lr * len(idx) / full_size
    np.testing.assert_allclose(eng.net.trainable["fc/W"].d, W0 - scale * gW, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(eng.net.trainable["fc/b"].d, b0 - scale * gb, rtol=1e-5, atol=1e-7)
    assert got_loss == pytest.approx(loss, rel=1e-5) and got_correct == correct


def test_train_inputs_follow_the_augment_flag(data):
    idx = np.array([1, 2, 3])
    seeds = preprocess.augmentation_seeds(0, np.arange(3))
    x, y = _logreg(data).train_inputs(idx, seeds)
    np.testing.assert_array_equal(x, preprocess.normalize(preprocess.augment(data.train_x[idx], seeds)))
    np.testing.assert_array_equal(y[:, 0], data.train_y[idx])
    plain, _ = _logreg(data, augment=False).train_inputs(idx, seeds)
    np.testing.assert_array_equal(plain, preprocess.normalize(data.train_x[idx]))


def test_evaluate_is_the_mean_over_every_sample(data):
    eng = _logreg(data)
    assert len(data.test_y) > E.EVAL_BATCH  # two batches of unequal size
    W, b = (eng.net.trainable[k].d.astype(np.float64) for k in ("fc/W", "fc/b"))
    loss, _, _, correct = _by_hand(W, b, preprocess.normalize(data.test_x), data.test_y)
    got_loss, got_acc = eng.evaluate_split("test")
    assert got_loss == pytest.approx(loss, rel=1e-5)
    assert got_acc == correct / len(data.test_y)


def test_prepare_with_label_noise_keeps_the_original_labels():
    ds = make_dataset(100, 10, 10, seed=2, side=8)
    d = E.prepare(ds, 4, label_noise=0.2)
    assert d.flipped.sum() == 20
    np.testing.assert_array_equal(d.original_y, ds.train.labels)
    assert np.all(d.train_y[d.flipped] != d.original_y[d.flipped])
    np.testing.assert_array_equal(d.train_y[~d.flipped], d.original_y[~d.flipped])
    assert d.train_x.shape[1:] == (1, 32, 32)  # resized once: 8 -> 32
    spec = E.model_spec(C.Config(model="mlp", width=3), d)
    assert spec == ModelSpec("mlp", (1, 32, 32), 10, 3)
