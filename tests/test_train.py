"""Training phase: replay exactness, determinism, removal semantics, snapshots, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synth import make_dataset

from sgd_influence import config as C
from sgd_influence import paths, preprocess, view
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.models import ModelSpec, Network
from sgd_influence.train import run_training
from sgd_influence.trajectory import (
    Record,
    load_epoch_state,
    load_final_state,
    make_record,
    replay,
    save_snapshot,
)

ROOT = Path(__file__).resolve().parents[1]


def _cfg(out, **kw):
    base = dict(output=str(out), model="cifarnet", width=2, n_epochs=2, batch_size=8, lr=0.05)
    base.update(kw)
    return C.Config(**base)


@pytest.fixture(scope="module")
def small_data():
    return prepare(make_dataset(40, 16, 16, seed=0), 0)


def _state_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_replay_with_nothing_removed_reproduces_final_exactly(tmp_path, small_data):
    cfg = _cfg(tmp_path)
    run_training(cfg, 0, small_data)
    rec = Record.load(paths.record(tmp_path, 0))
    final = load_final_state(tmp_path, 0)
    for start in (1, 0):  # the last epoch from its snapshot, and every epoch
        eng = Engine(model_spec(cfg, small_data), 0, small_data)
        eng.net.load_state_dict(load_epoch_state(tmp_path, 0, start))
        replay(eng, rec, rec.steps_of(start))
        got = eng.net.state_dict()
        # Same graph, same inputs, same single-threaded CPU kernels: bit-identical,
        # BN running statistics included (tolerance 0).
        assert _state_equal(got, final), start


def test_same_command_twice_gives_identical_parameters(tmp_path, small_data):
    finals = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        run_training(_cfg(out), 0, prepare(make_dataset(40, 16, 16, seed=0), 0))
        finals.append(load_final_state(out, 0))
        assert (paths.record(out, 0)).exists()
    assert _state_equal(*finals)
    r0 = Record.load(paths.record(tmp_path / "run0", 0))
    r1 = Record.load(paths.record(tmp_path / "run1", 0))
    assert np.array_equal(r0.indices, r1.indices) and np.array_equal(r0.aug_seeds, r1.aug_seeds)


def test_other_seed_gives_other_run(tmp_path, small_data):
    a = make_record(0, 40, 2, 8, 0.05)
    b = make_record(1, 40, 2, 8, 0.05)
    assert not np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.aug_seeds, b.aug_seeds)
    n0 = Network(ModelSpec("cifarnet", (1, 32, 32), 10, 2), 0).state_dict()
    n1 = Network(ModelSpec("cifarnet", (1, 32, 32), 10, 2), 1).state_dict()
    assert not np.array_equal(n0["conv1/W"], n1["conv1/W"])


def test_removing_a_sample_changes_parameters_from_its_first_step_only(tmp_path, small_data):
    cfg = _cfg(tmp_path)
    run_training(cfg, 0, small_data)
    rec = Record.load(paths.record(tmp_path, 0))
    init = load_epoch_state(tmp_path, 0, 0)
    j = int(rec.indices[3, 0])  # a sample whose first appearance is step 3
    first = int(np.argmax((rec.indices == j).any(axis=1)))
    assert first == 3
    removed = np.zeros(rec.n_train, bool)
    removed[j] = True

    def trajectory(mask):
        eng = Engine(model_spec(cfg, small_data), 0, small_data)
        eng.net.load_state_dict(init)
        states = []
        for s in range(rec.n_steps):
            replay(eng, rec, [s], mask)
            states.append(eng.net.state_dict())
        return states

    full, without = trajectory(None), trajectory(removed)
    for s in range(first):
        assert _state_equal(full[s], without[s]), s
    assert not _state_equal(full[first], without[first])
    assert not _state_equal(full[-1], without[-1])


def test_empty_batch_is_skipped(small_data):
    rec = make_record(0, 40, 1, 8, 0.05)
    eng = Engine(ModelSpec("cifarnet", small_data.in_shape, 10, 2), 0, small_data)
    before = eng.net.state_dict()
    removed = np.zeros(40, bool)
    removed[rec.batch(0)[0]] = True
    replay(eng, rec, [0], removed)
    assert _state_equal(eng.net.state_dict(), before)


def test_augmentation_is_a_function_of_the_seed(small_data):
    rec = make_record(0, 40, 1, 8, 0.05)
    idx, seeds = rec.batch(0)
    a = preprocess.augment(small_data.train_x[idx], seeds)
    b = preprocess.augment(small_data.train_x[idx][::-1], seeds[::-1])[::-1]
    assert np.array_equal(a, b)  # same seed -> same image, whatever the batch position
    c = preprocess.augment(small_data.train_x[idx], seeds + 1)
    assert not np.array_equal(a, c)
    code = ("import numpy as np, sys; sys.path.insert(0, %r);"
            "from sgd_influence.preprocess import augment_params, augmentation_seeds;"
            "s = augmentation_seeds(7, np.arange(100)); print([a.tolist() for a in augment_params(s)])"
            % str(ROOT))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1]
    dy, dx, flip = (np.array(v) for v in json.loads(runs[0].replace("True", "true").replace("False", "false")))
    assert dy.min() >= 0 and dy.max() <= 8 and dx.max() <= 8 and 20 < flip.sum() < 80


def test_resize_and_normalisation_rules():
    assert preprocess.target_side(28, 28) == 32
    assert preprocess.target_side(96, 96) == 96
    assert preprocess.target_side(200, 300) == 128
    img = np.full((2, 1, 28, 28), 255, np.uint8)
    out = preprocess.resize_images(img)
    assert out.shape == (2, 1, 32, 32) and out.dtype == np.uint8
    x = preprocess.normalize(np.array([[[[0, 255]]]], np.uint8))
    np.testing.assert_allclose(x.ravel(), [-1.0, 1.0])
    rgb = preprocess.normalize(np.zeros((1, 3, 1, 1), np.uint8)).ravel()
    np.testing.assert_allclose(rgb, -preprocess.RGB_MEAN / preprocess.RGB_STD, rtol=1e-6)


def test_cifarnet_snapshot_size_matches_paper(tmp_path):
    net = Network(ModelSpec("cifarnet", (1, 32, 32), 10), 0)
    assert net.num_trainable() == 307_370
    state = net.state_dict()
    raw = sum(a.nbytes for a in state.values())
    assert raw == 1_231_272  # 307,818 float32 with BN running statistics: the paper's 1.236 MB
    save_snapshot(tmp_path / "s.npz", state)
    size = (tmp_path / "s.npz").stat().st_size
    assert 1.22e6 < size < 1.28e6


def test_no_parameter_state_leaks_between_networks():
    a = Network(ModelSpec("cifarnet", (1, 32, 32), 10, 2), 0)
    a.trainable["fc/W"].d = 7.0
    b = Network(ModelSpec("cifarnet", (1, 32, 32), 10, 2), 0)
    assert not np.any(b.trainable["fc/W"].d == 7.0)
    assert np.array_equal(Network(ModelSpec("cifarnet", (1, 32, 32), 10, 2), 0).state_dict()["fc/W"],
                          b.state_dict()["fc/W"])


def test_training_outputs_epoch_snapshots_and_optional_step_cache(tmp_path, small_data):
    cfg = _cfg(tmp_path)
    run_training(cfg, 0, small_data)
    rec = Record.load(paths.record(tmp_path, 0))
    with np.load(paths.record(tmp_path, 0), allow_pickle=False) as z:  # not pickled
        assert set(z.files) >= {"epoch", "lr", "indices", "aug_seeds", "batch_size"}
    assert rec.n_steps == 10 and rec.n_epochs == 2 and list(rec.window(1)) == list(range(5, 10))
    snaps = sorted(p.name for p in paths.train_dir(tmp_path, 0).glob("snapshots/*")
                   if not p.name.endswith(".sha256"))  # (each with its checksum beside it)
    assert snaps == ["epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]  # nothing per step
    hist = pd.read_csv(paths.history(tmp_path, 0))
    assert list(hist["epoch"]) == [1, 2]
    assert hist[["train_acc", "val_acc"]].apply(lambda c: c.between(0, 1).all()).all()
    # --hara-cache on the finished run: the every-step cache of the window is written by
    # replay (no training again) and its first row is the window-start epoch snapshot
    mtime = paths.record(tmp_path, 0).stat().st_mtime_ns
    run_training(C.replace(cfg, hara_cache=True, infl_epochs=1), 0, small_data)
    assert paths.record(tmp_path, 0).stat().st_mtime_ns == mtime
    cache = np.load(paths.step_cache(tmp_path, 0, 1))
    assert cache.shape == (5, Network(model_spec(cfg, small_data), 0).num_trainable())
    ws = Engine(model_spec(cfg, small_data), 0, small_data)
    ws.net.load_state_dict(load_epoch_state(tmp_path, 0, 1))
    assert np.array_equal(cache[0], ws.net.get_flat())
    # trained with --hara-cache from the start: the same file, written during training
    other = tmp_path / "cached"
    run_training(C.replace(cfg, output=str(other), hara_cache=True, infl_epochs=1), 0, small_data)
    assert paths.step_cache(other, 0, 1).read_bytes() == paths.step_cache(tmp_path, 0, 1).read_bytes()


def test_rerun_reuses_and_another_configuration_is_another_entry(tmp_path, small_data):
    cfg = _cfg(tmp_path)
    view.point(cfg, ("train",), [0])
    run_training(cfg, 0, small_data)
    final = paths.epoch_snapshot(tmp_path, 0, 2)
    mtime, content = final.stat().st_mtime_ns, final.read_bytes()
    view.point(cfg, ("train",), [0])
    run_training(cfg, 0, small_data)
    assert final.stat().st_mtime_ns == mtime
    other = _cfg(tmp_path, lr=0.1)
    view.point(other, ("train",), [0])
    assert not final.exists()  # another entry: nothing trained there yet
    run_training(other, 0, small_data)
    assert json.loads(paths.train_identity(tmp_path).read_text())["lr"] == 0.1
    view.point(cfg, ("train",), [0])
    assert final.read_bytes() == content and final.stat().st_mtime_ns == mtime
    view.point(_cfg(tmp_path, overwrite=True), ("train",), [0])
    assert not final.exists()  # --overwrite: trained again


def test_train_cli_help_and_bad_flag(tmp_path):
    env_py = [sys.executable, "-m", "sgd_influence.train"]
    h = subprocess.run(env_py + ["--help"], cwd=ROOT, capture_output=True, text=True)
    assert h.returncode == 0 and "--infl-epochs" in h.stdout
    bad = subprocess.run(env_py + ["-o", str(tmp_path), "--infl-epochs", "5", "-e", "2"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "--infl-epochs" in errors[0]
