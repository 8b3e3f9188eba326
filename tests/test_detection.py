"""Label noise and its detection: flipping, metrics with known answers, files and figures."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synth import make_dataset

from sgd_influence import config as C
from sgd_influence import detection as D
from sgd_influence import engine, fileio, paths
from sgd_influence import figures as Fg
from sgd_influence.data import ImageSource
from sgd_influence.infl import influence_frame
from sgd_influence.noise import flip_rows


# --------------------------------------------------------------------------- noise injection
@pytest.mark.parametrize("n,p,classes", [(100, 0.1, 10), (3000, 0.1, 10), (7, 0.5, 2), (999, 0.333, 3),
                                         (50, 0.0, 10)])
def test_flip_exact_count_each_to_another_class(n, p, classes):
    y = np.random.default_rng(1).integers(0, classes, n)
    ids = np.arange(n) + 100
    new, mask = flip_rows(y, ids, ids, p, classes, seed=3)
    assert mask.sum() == round(p * n)
    assert np.all(new[mask] != y[mask])
    assert np.array_equal(new[~mask], y[~mask])
    assert new.min() >= 0 and new.max() < classes


def test_flip_is_seeded():
    y = np.arange(500) % 10
    ids = np.arange(500)
    a, ma = flip_rows(y, ids, ids, 0.2, 10, seed=0)
    b, mb = flip_rows(y, ids, ids, 0.2, 10, seed=0)
    c, mc = flip_rows(y, ids, ids, 0.2, 10, seed=1)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)


def test_flip_reaches_every_other_class():
    y = np.zeros(2000, np.int64)
    ids = np.arange(2000)
    new, mask = flip_rows(y, ids, ids, 0.5, 4, seed=0)
    assert set(np.unique(new[mask])) == {1, 2, 3}


def test_training_keeps_which_rows_were_flipped(tmp_path):
    from sgd_influence.train import train

    ds = make_dataset(48, 16, 16, seed=0, side=8)
    data = engine.prepare(ds, seed=0, label_noise=0.25)
    cfg = C.Config(output=str(tmp_path), model="logreg", n_epochs=1, batch_size=16,
                   label_noise=0.25, augment=False, methods=("Ours",))
    train(cfg, 0, data)
    df = pd.read_csv(paths.label_noise(tmp_path, 0))
    assert list(df.columns) == ["datasource_index", "given_label", "original_label", "flipped"]
    assert df["flipped"].sum() == 12
    assert np.array_equal(df["given_label"], data.train_y)
    assert np.array_equal(df["original_label"], ds.train.labels)
    f = df["flipped"].astype(bool)
    assert (df.loc[f, "given_label"] != df.loc[f, "original_label"]).all()
    assert (df.loc[~f, "given_label"] == df.loc[~f, "original_label"]).all()


# --------------------------------------------------------------------------- metrics
def test_metrics_of_hand_made_ranking():
    # 100 samples ranked 0..99 (most harmful first), flipped at ranks 0, 3, 7, 15, 50.
    n = 100
    flipped = np.zeros(n, bool)
    flipped[[0, 3, 7, 15, 50]] = True
    influence = np.arange(n) - 100.0
    # shuffle the rows: the metrics must follow the scores, not the row order
    perm = np.random.default_rng(0).permutation(n)
    m = D.ranking_metrics(influence[perm], flipped[perm])
    assert m["recall_at_1pct"] == pytest.approx(1 / 5)   # top 1 row: rank 0
    assert m["recall_at_5pct"] == pytest.approx(2 / 5)   # ranks 0..4: 0, 3
    assert m["recall_at_10pct"] == pytest.approx(3 / 5)  # ranks 0..9: 0, 3, 7
    assert m["recall_at_20pct"] == pytest.approx(4 / 5)  # ranks 0..19: + 15
    # clean samples ranked after each flipped one: 95 + 93 + 90 + 83 + 49 of 5 * 95 pairs
    assert m["auc"] == pytest.approx(410 / 475)


def test_auc_extremes_and_ties():
    y = np.array([1, 1, 0, 0, 0], bool)
    assert D.roc_auc([5, 4, 3, 2, 1], y) == 1.0
    assert D.roc_auc([1, 2, 3, 4, 5], y) == 0.0
    assert D.roc_auc([0, 0, 0, 0, 0], y) == 0.5
    # one tie between a flipped and a clean sample counts one half
    assert D.roc_auc([3, 1, 1, 0, 0], y) == pytest.approx((3 + 2.5) / 6)
    assert np.isnan(D.roc_auc([1, 2], [False, False]))


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(5)
    s = rng.integers(0, 6, 60).astype(float)  # many ties
    y = rng.random(60) < 0.3
    pos, neg = s[y], s[~y]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    assert D.roc_auc(s, y) == pytest.approx(np.mean(pairs))


def test_recall_rows_inspected_and_curve():
    assert D.n_top(0.01, 3000) == 30 and D.n_top(0.1, 3000) == 300 and D.n_top(0.01, 10) == 1
    flipped = np.array([True, False, True, False] + [False] * 16)
    rec = D.recall_at(flipped)
    assert rec == {1: 0.5, 5: 0.5, 10: 0.5, 20: 1.0}  # 1, 1, 2 and 4 rows
    # the curve follows the ranking (ascending influence = most harmful first), not the row
    # order: samples 19 and 12 are flipped and ranked 1st and 8th of 20
    influence = -np.arange(20.0)
    flags = np.zeros(20, bool)
    flags[[19, 12]] = True
    x, y = D.detection_curve(influence, flags, points=5)  # 0, 5, 10, 15, 20 rows inspected
    np.testing.assert_array_equal(x, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0, 1.0, 1.0])
    _, y_rev = D.detection_curve(-influence, flags, points=5)  # now ranked 20th and 13th
    np.testing.assert_array_equal(y_rev, [0.0, 0.0, 0.0, 0.5, 1.0])


# --------------------------------------------------------------------------- files and figures
def _fake_run(out, noise: float, seeds=(0, 1)):
    """A tiny output folder: saved config, label_noise.csv, influence files (with the growth
    of |u| beside them) and the training images as PNG files their x:image names."""
    cfg = C.Config(output=str(out), dataset="mnist5k", label_noise=noise, n_trials=len(seeds))
    fileio.write_json(paths.run_config(out), cfg.to_dict())
    data = {}
    for s in seeds:
        ds = make_dataset(200, 10, 10, seed=s)
        folder = out / f"images_{s}"
        for p, img in zip(ds.train.paths, ds.train.images):
            (folder / p).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(folder / p)
        d = engine.prepare(ds, s, noise, ImageSource("csv", train_csv=str(folder / "train.csv")))
        data[s] = d
        if noise > 0:
            fileio.write_csv(paths.label_noise(out, s), pd.DataFrame({
                "datasource_index": d.train_rows, "given_label": d.train_y,
                "original_label": d.original_y, "flipped": d.flipped.astype(int)}))
        rng = np.random.default_rng(s)
        scores = {
            "Hara": rng.normal(size=d.n_train) - 3.0 * d.flipped,  # flipped samples look harmful
            "Ours": rng.normal(size=d.n_train) - 1.0 * d.flipped,
            "Random": rng.random(d.n_train),
        }
        for m, sc in scores.items():
            fileio.write_csv(paths.influence(out, m, s), influence_frame(d, sc))
        fileio.write_json(paths.influence_stats(out, "Hara", s), {"u_growth": 0.5 * (s + 1)})
        fileio.write_json(paths.influence_stats(out, "Ours", s), {"u_growth": 100.0 * (s + 1)})
    return cfg, data


def test_analyze_detection_writes_table_and_figure(tmp_path, monkeypatch):
    cfg, data = _fake_run(tmp_path, 0.1)
    det = D.analyze_detection(tmp_path)
    assert det is not None
    table = det.table
    saved = pd.read_csv(paths.detection(tmp_path))
    assert list(saved.columns) == list(D.DETECTION_COLUMNS)
    trials = saved[saved["row"] == "trial"]
    assert len(trials) == 6 and set(trials["n_flipped"]) == {20}
    mean = saved[saved["row"] == "mean"].set_index("method")
    assert list(mean.index) == ["Hara", "Ours", "Random"]
    assert mean.loc["Hara", "auc"] > 0.95 > mean.loc["Ours", "auc"] > 0.65
    assert 0.3 < mean.loc["Random", "auc"] < 0.7
    assert mean.loc["Hara", "recall_at_20pct"] >= mean.loc["Hara", "recall_at_1pct"]
    # the saved per-seed numbers are those of the metric functions
    infl = pd.read_csv(paths.influence(tmp_path, "Hara", 1))
    flags = D.flipped_of(infl, D.read_flipped(tmp_path, 1))
    want = D.ranking_metrics(infl["influence"], flags)
    got = trials[(trials["method"] == "Hara") & (trials["seed"] == 1)].iloc[0]
    for c in D.METRIC_COLUMNS:
        assert got[c] == pytest.approx(want[c])
    # the growth of |u| beside each influence file: per seed, geometric mean over seeds
    assert got["u_growth"] == 1.0
    assert mean.loc["Ours", "u_growth"] == pytest.approx(np.sqrt(100.0 * 200.0))
    assert np.isnan(mean.loc["Random", "u_growth"])
    text = D.format_table(table)
    assert "recall@10%" in text and "|u| growth" in text and "x141" in text
    png = paths.figure(tmp_path, "detection")
    Fg.plot_detection(det.curves, det.noise_share, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the worst-samples figure reads the image files x:image names, not the data set
    def no_reload(*a, **k):
        raise AssertionError("the data set was loaded again")

    monkeypatch.setattr(engine, "load_prepared", no_reload)
    fig = Fg.worst_samples_figure(tmp_path, seed=0, k=8)
    assert fig == paths.figure(tmp_path, "worst_samples")
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = pd.read_csv(paths.influence(tmp_path, "Hara", 0)).iloc[0]
    i = list(data[0].train_rows).index(first["datasource_index"])
    pixels = Fg.read_image(first["x:image"])
    assert np.array_equal(pixels, make_dataset(200, 10, 10, seed=0).train.images[i, 0])


def test_no_label_noise_does_nothing(tmp_path, caplog):
    _fake_run(tmp_path, 0.0, seeds=(0,))
    assert D.analyze_detection(tmp_path) is None
    assert not paths.detection(tmp_path).exists()
    # the worst-samples figure is drawn for every run; a missing image file is an empty tile
    paths.run_config(tmp_path).unlink()
    import shutil

    shutil.rmtree(tmp_path / "images_0")
    fig = Fg.worst_samples_figure(tmp_path, seed=0, k=5)
    assert fig.exists()
    assert any("could not be read" in r.getMessage() for r in caplog.records)


def test_mismatched_influence_rows_are_refused(tmp_path):
    _fake_run(tmp_path, 0.1, seeds=(0,))
    noise = D.read_flipped(tmp_path, 0)
    noise.loc[0, "datasource_index"] = 10_000
    infl = pd.read_csv(paths.influence(tmp_path, "Ours", 0))
    with pytest.raises(ValueError, match="label_noise.csv"):
        D.flipped_of(infl, noise)
