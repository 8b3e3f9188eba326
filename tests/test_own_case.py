"""A user's own case served as it is: images at the network's own size (8x8, non-square),
--image-size, the augmentation a CSV data set gets, and a loud word when the model did
not learn."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import train_infl_eval
from sgd_influence import config as C
from sgd_influence import fileio, paths, preprocess
from sgd_influence.engine import Engine, load_prepared, model_spec

# a head that flattens the image: it builds only at the size it was written for
NETWORK = '''
import nnabla.functions as F
import nnabla.parametric_functions as PF


def flat8(x, num_classes, norm):
    assert x.shape[1:] == (1, 8, 8), x.shape
    h = F.softplus(norm(PF.convolution(x, 3, (3, 3), pad=(1, 1), name="conv"), "bn"))
    return PF.affine(F.reshape(h, (x.shape[0], 3 * 8 * 8)), num_classes, name="fc")


def flat6x10(x, num_classes, norm):
    assert x.shape[1:] == (1, 6, 10), x.shape
    return PF.affine(F.reshape(x, (x.shape[0], 60)), num_classes, name="fc")


def pooled(x, num_classes, norm):
    h = F.softplus(norm(PF.convolution(x, 3, (3, 3), pad=(1, 1), name="conv"), "bn"))
    return PF.affine(F.mean(h, axis=(2, 3)), num_classes, name="fc")
'''


def _split(folder: Path, name: str, n: int, rng, h: int, w: int, classes: int = 3) -> Path:
    """Images of ``h`` x ``w`` whose class is the bright third of their rows."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    y = rng.integers(0, classes, n)
    lines = ["x:image,y:label"]
    for i, label in enumerate(y):
        img = rng.random((h, w)) * 60
        band = max(h // classes, 1)
        img[label * band:(label + 1) * band, :] += 160
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i:03d}.png")
        lines.append(f"{name}/{i:03d}.png,{int(label)}")
    csv = folder / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def _data(folder: Path, h: int, w: int) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    return {k: _split(folder, k, n, rng, h, w) for k, n in (("train", 60), ("val", 30), ("test", 30))}


def _argv(data, out, *extra) -> list[str]:
    return ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
            "--test-csv", str(data["test"]), "-e", "3", "--batch-size", "10", "--lr", "0.1",
            "-nt", "1", "-r", "0", "5", "--noise-floor-draws", "0", "--jobs", "1",
            "--methods", "Hara", "Random", *extra]


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("net") / "mine.py"
    path.write_text(NETWORK)
    return path


@pytest.mark.parametrize("h, w, fn", [(8, 8, "flat8"), (6, 10, "flat6x10")])
def test_a_network_of_yours_sees_the_images_at_their_own_size(tmp_path, net, logs, h, w, fn):
    data = _data(tmp_path / "data", h, w)
    out = tmp_path / "out"
    assert train_infl_eval.main(_argv(data, out, "--model", f"{net}:{fn}")) == 0
    saved = fileio.read_json(paths.run_config(out))
    assert saved["input"]["shape"] == [1, h, w] and saved["input"]["size"] == "the images' own size"
    assert saved["input"]["augment"] == "none"  # a CSV data set: no augmentation unless asked
    assert saved["input"]["normalisation"] == "pixels / 255, then (x - 0.5) / 0.5"
    told = [m for m in logs.at(logging.INFO) if "sees 1x%dx%d images" % (h, w) in m]
    assert told and "the images' own size" in told[0]
    with h5py.File(paths.final_model(out, 0), "r") as f:
        assert f["fc/affine/W"].shape[0] == (3 * 8 * 8 if fn == "flat8" else 60)
    assert fileio.read_json(paths.train_identity(out))["image_size"] == "own"


def test_each_phase_alone_takes_the_image_size(tmp_path, net):
    """--image-size is a flag of the training, influence and evaluation phases run alone
    (its value is part of the training run's identity, so each phase is given it)."""
    from sgd_influence import cli

    data = _data(tmp_path / "data", 8, 8)
    argv = _argv(data, tmp_path / "out", "--model", f"{net}:pooled", "--image-size", "12", "16")
    cut = argv.index("-nt")  # the flags of the evaluation alone: -nt -r --noise-floor-draws --jobs
    phase = argv[:cut] + argv[cut + 9:]
    assert phase[cut:cut + 2] == ["--methods", "Hara"]
    assert cli.train_main(phase) == 0
    saved = fileio.read_json(paths.train_identity(tmp_path / "out"))
    assert saved["image_size"] == [12, 16]
    assert cli.infl_main(phase) == 0
    assert cli.eval_main(argv) == 0
    assert paths.score(tmp_path / "out", "Hara", 5, 0).exists()


def test_image_size_is_chosen_for_any_network_and_refused_for_an_nnp(tmp_path, net):
    data = _data(tmp_path / "data", 8, 8)
    out = tmp_path / "out"
    assert train_infl_eval.main(_argv(data, out, "--model", f"{net}:pooled", "--image-size", "12", "16")) == 0
    assert fileio.read_json(paths.run_config(out))["input"]["shape"] == [1, 12, 16]
    cfg = C.Config(output=str(out), train_csv=str(data["train"]), val_csv=str(data["val"]),
                   test_csv=str(data["test"]), model="logreg", image_size=(10, 6))
    assert load_prepared(cfg, 0).in_shape == (1, 10, 6)
    # the built-in networks keep their rule: 8x8 -> a 32x32 square
    assert load_prepared(C.replace(cfg, image_size=()), 0).in_shape == (1, 32, 32)
    with pytest.raises(ValueError, match="--image-size: given with --model-nnp; the file.s network fixes"):
        C.Config(model_nnp="a.nnp", image_size=(8, 8)).validate()
    # the wrong size for a network written for its own is its own one-line error
    assert train_infl_eval.main(_argv(data, tmp_path / "o2", "--model", f"{net}:flat8",
                                      "--image-size", "9", "9")) == 2


def test_augmentation_is_off_on_a_csv_data_set_unless_asked_and_kept_on_built_in_sets():
    assert C.Config(train_csv="a.csv", test_csv="b.csv").augment == "none"
    assert C.Config(train_csv="a.csv", test_csv="b.csv", augment="crop").augment_modes() == (True, False)
    assert C.Config().augment == "crop,flip"
    assert C.Config().identity("train")["augment"] is True  # as saved before the modes
    assert C.Config(augment=False).augment == "none" and C.Config.from_dict({"augment": True}).augment == "crop,flip"
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (64, 1, 8, 12), dtype=np.uint8)
    seeds = np.arange(64, dtype=np.int64)
    both = preprocess.augment(imgs, seeds)
    crop = preprocess.augment(imgs, seeds, flip=False)
    flip = preprocess.augment(imgs, seeds, crop=False)
    dy, dx, flips = preprocess.augment_params(seeds)
    assert flips.any() and (~flips).any()
    for i in range(64):
        mirrored = crop[i][:, :, ::-1] if flips[i] else crop[i]
        np.testing.assert_array_equal(both[i], mirrored)  # the same crop, the flip left out
        np.testing.assert_array_equal(flip[i], imgs[i][:, :, ::-1] if flips[i] else imgs[i])


def test_a_model_that_did_not_learn_is_said_loudly(tmp_path, net, logs, capsys):
    data = _data(tmp_path / "data", 8, 8)
    out = tmp_path / "out"
    assert train_infl_eval.main(_argv(data, out, "--model", f"{net}:flat8", "--lr", "1e-6",
                                      "-e", "1")) == 0
    warned = [m for m in logs.at(logging.WARNING) if "the model did not learn" in m]
    assert len(warned) == 2, warned  # after training, and again beside the tables
    assert "validation accuracy" in warned[0] and "most common class" in warned[0]
    assert "-e" in warned[0] and "--lr" in warned[0] and "1x8x8" in warned[0]
    assert "WARNING: seed 0: the model did not learn" in capsys.readouterr().out
    facts = fileio.read_json(paths.learned(out, 0))
    assert facts["learned"] is False and facts["majority_rate"] >= 1 / 3 - 1e-9
    # the same network that learns: not a word
    logs.clear()
    good = tmp_path / "good"
    assert train_infl_eval.main(_argv(data, good, "--model", f"{net}:flat8", "-e", "6")) == 0
    assert fileio.read_json(paths.learned(good, 0))["learned"] is True
    assert not [m for m in logs.at(logging.WARNING) if "did not learn" in m]


def test_the_engine_feeds_what_the_configuration_says(tmp_path, net):
    data = _data(tmp_path / "data", 6, 10)
    cfg = C.Config(output=str(tmp_path / "o"), train_csv=str(data["train"]), val_csv=str(data["val"]),
                   test_csv=str(data["test"]), model=f"{net}:flat6x10", augment="crop,flip")
    prepared = load_prepared(cfg, 0)
    eng = Engine(model_spec(cfg, prepared), 0, prepared, augment=cfg.augment)
    x, _ = eng.train_inputs(np.arange(4), np.arange(4, dtype=np.int64))
    assert x.shape == (4, 1, 6, 10)
    assert pd.Series(prepared.train_y).nunique() == 3
