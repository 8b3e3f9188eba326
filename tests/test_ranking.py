"""The ranking averaged over trials, label flips that belong to the data set (and the
per-trial flips of older runs), and the Python interface of the README."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synth import write_csv_split

import train_infl_eval
from sgd_influence import artifacts, cli, data, engine, fileio, noise, paths, ranking, view
from sgd_influence import config as C
from sgd_influence import detection as D

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the mean file
def _influence(out, method, seed, rows):
    """A per-seed influence file of ``rows`` = [(datasource_index, label, influence)]."""
    df = pd.DataFrame({"x:image": [f"/data/img_{i}.png" for i, _, _ in rows],
                       "y:label": [y for _, y, _ in rows], "influence": [v for _, _, v in rows],
                       "datasource_index": [i for i, _, _ in rows]})
    fileio.write_csv(paths.influence(out, method, seed), df.sort_values("influence", kind="mergesort"))


def test_mean_file_of_two_trials_by_hand(tmp_path):
    out = tmp_path
    fileio.write_json(paths.train_identity(out), {"dataset": "csv", "label_noise": 0.0})
    # seed 0 scores rows 0..3, seed 1 rows 1..4; row 2's label differs between the trials
    _influence(out, "Ours", 0, [(0, 1, -3.0), (1, 0, 0.5), (2, 2, -1.0), (3, 1, 2.0)])
    _influence(out, "Ours", 1, [(1, 0, 1.5), (2, 3, -2.0), (3, 1, -4.0), (4, 0, 1.0)])
    _influence(out, "Random", 0, [(0, 1, 0.1), (1, 0, 0.2), (2, 2, 0.3), (3, 1, 0.4)])
    done = ranking.write_mean_rankings(out)
    assert set(done) == {"Ours", "Random"} and done["Ours"][1] == [0, 1]
    got = pd.read_csv(paths.influence_mean(out, "Ours"))
    assert tuple(got.columns) == ("x:image", "y:label", "influence", "datasource_index",
                                  "influence_sem", "n_trials")
    # by hand: mean, sd / sqrt(n) with the sample sd (two values a, b: |a - b| / 2), n
    want = {0: (-3.0, math.nan, 1), 1: (1.0, 0.5, 2), 2: (-1.5, 0.5, 2), 3: (-1.0, 3.0, 2),
            4: (1.0, math.nan, 1)}
    g = got.set_index("datasource_index")
    for i, (mean, sem, n) in want.items():
        assert g.loc[i, "influence"] == pytest.approx(mean)
        assert (math.isnan(sem) and math.isnan(g.loc[i, "influence_sem"])) or g.loc[i, "influence_sem"] == pytest.approx(sem)
        assert g.loc[i, "n_trials"] == n
        assert g.loc[i, "x:image"] == f"/data/img_{i}.png"
    # ascending influence; rows 1 and 4 tie at 1.0 and keep the id order
    assert list(got["datasource_index"]) == [0, 2, 3, 1, 4]
    assert g.loc[2, "y:label"] == 2  # labels 2 and 3 once each: the earliest trial's
    # one trial only: its own scores, sem NaN
    r = pd.read_csv(paths.influence_mean(out, "Random"))
    assert list(r["influence"]) == [0.1, 0.2, 0.3, 0.4] and r["influence_sem"].isna().all()
    assert (r["n_trials"] == 1).all()
    # a third trial makes label 3 the most common one; a rerun that changes nothing
    # leaves the file alone
    _influence(out, "Ours", 2, [(2, 3, 0.0)])
    fileio.write_json(paths.train_identity(out), {"dataset": "csv", "label_noise": 0.0})
    ranking.write_mean_rankings(out, ["Ours"])
    g = pd.read_csv(paths.influence_mean(out, "Ours")).set_index("datasource_index")
    assert g.loc[2, "y:label"] == 3 and g.loc[2, "n_trials"] == 3 and g.loc[2, "influence"] == pytest.approx(-1.0)
    before = paths.influence_mean(out, "Ours").stat().st_mtime_ns
    ranking.write_mean_rankings(out, ["Ours"])
    assert paths.influence_mean(out, "Ours").stat().st_mtime_ns == before
    # only some seeds
    assert ranking.mean_ranking(out, "Ours", seeds=[1])[0]["n_trials"].eq(1).all()
    # the Python API averages the trials there are now, not those of the last analysis
    import sgd_influence

    _influence(out, "Random", 1, [(0, 1, 0.3), (1, 0, 0.2), (2, 2, 0.1), (3, 1, 0.0)])
    fileio.write_json(paths.train_identity(out), {"dataset": "csv", "label_noise": 0.0})
    got = sgd_influence.scores(out, "Random")
    assert got["n_trials"].eq(2).all() and got["influence"].eq(0.2).all()
    assert pd.read_csv(paths.influence_mean(out, "Random"))["n_trials"].eq(1).all()  # not rewritten


def test_builtin_sets_are_averaged_by_image_not_by_position(tmp_path):
    """A built-in set's datasource_index is a position in the trial's split: the same image
    is matched across trials by the index its file name carries."""
    out = tmp_path
    fileio.write_json(paths.train_identity(out), {"dataset": "mnist5k", "label_noise": 0.0})
    for s, images in ((0, [7, 3, 9]), (1, [3, 12, 7])):
        df = pd.DataFrame({"x:image": [f"/d/mnist5k/png/images/{i:05d}.png" for i in images],
                           "y:label": [1, 2, 3], "influence": [float(s + 1), -1.0, 5.0],
                           "datasource_index": [0, 1, 2]})
        fileio.write_csv(paths.influence(out, "Ours", s), df)
    got = ranking.mean_ranking(out, "Ours")[0].set_index("datasource_index")
    assert sorted(got.index) == [3, 7, 9, 12]
    assert got.loc[7, "influence"] == pytest.approx((1.0 + 5.0) / 2) and got.loc[7, "n_trials"] == 2
    assert got.loc[3, "influence"] == pytest.approx((-1.0 + 2.0) / 2)
    assert got.loc[9, "n_trials"] == 1 and got.loc[12, "x:image"].endswith("images/00012.png")


# --------------------------------------------------------------------------- a run
def _csv_set(folder, n_train=90, n_test=30):
    rng = np.random.default_rng(11)
    return {k: write_csv_split(folder, k, n, rng, 4, 28) for k, n in (("train", n_train), ("test", n_test))}


def _argv(csvs, out, *extra):
    # no --val-csv: a seeded 20 % of the training CSV is held out, so the two trials score
    # overlapping sets of rows
    return ["-o", str(out), "--train-csv", str(csvs["train"]), "--test-csv", str(csvs["test"]),
            "--model", "logreg", "--lr", "0.01", "-e", "2", "--batch-size", "16", "-nt", "2",
            "-r", "0", "--methods", "Ours", "Random", "--noise-floor-draws", "0",
            "--label-noise", "0.2", "--jobs", "1", *extra]


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    return _csv_set(tmp_path_factory.mktemp("csvdata"))


def test_run_writes_the_mean_of_its_trials_with_the_same_flips(csvs, tmp_path):
    out = tmp_path / "out"
    assert train_infl_eval.main(_argv(csvs, out, "--label-noise-seed", "3")) == 0
    # the same rows flipped, to the same class, in every trial that trains on them
    noise0, noise1 = (D.read_flipped(out, s).set_index("datasource_index") for s in (0, 1))
    both = noise0.index.intersection(noise1.index)
    assert 40 < len(both) < 72  # the trials' training rows differ, and overlap
    assert (noise0.loc[both, "flipped"] == noise1.loc[both, "flipped"]).all()
    assert (noise0.loc[both, "given_label"] == noise1.loc[both, "given_label"]).all()
    assert noise0["flipped"].any()
    # the mean file, by hand from the per-seed files
    for method in ("Ours", "Random"):
        scored: dict[int, list[float]] = {}
        labels: dict[int, list[int]] = {}
        for s in (0, 1):
            f = pd.read_csv(paths.influence(out, method, s))
            for i, y, v in zip(f["datasource_index"], f["y:label"], f["influence"]):
                scored.setdefault(int(i), []).append(float(v))
                labels.setdefault(int(i), []).append(int(y))
        mean = pd.read_csv(paths.influence_mean(out, method))
        assert sorted(mean["datasource_index"]) == sorted(scored)
        assert mean["influence"].is_monotonic_increasing
        for _, r in mean.iterrows():
            v = scored[int(r["datasource_index"])]
            assert r["n_trials"] == len(v)
            assert r["influence"] == pytest.approx(sum(v) / len(v))
            if len(v) == 1:
                assert math.isnan(r["influence_sem"])
            else:
                sd = math.sqrt(sum((x - sum(v) / 2) ** 2 for x in v) / (len(v) - 1))
                assert r["influence_sem"] == pytest.approx(sd / math.sqrt(len(v)))
            assert r["y:label"] == Counter(labels[int(r["datasource_index"])]).most_common(1)[0][0]
        assert set(mean["n_trials"]) == {1, 2}
    # the detection table scores the averaged ranking against the rows' flipped marks
    table = pd.read_csv(paths.detection(out))
    rows = table[table["row"] == D.MEAN_ROW].set_index("method")
    assert list(rows.index) == ["Ours", "Random"] and (rows["n_seeds"] == 2).all()
    flags = pd.concat([noise0["flipped"], noise1["flipped"]]).groupby(level=0).first()
    assert rows.loc["Ours", "n_flipped"] == int(flags.sum())
    mean = pd.read_csv(paths.influence_mean(out, "Ours"))
    want = D.ranking_metrics(mean["influence"], flags.loc[mean["datasource_index"]].to_numpy(bool))
    assert rows.loc["Ours", "auc"] == pytest.approx(want["auc"])
    assert "Ours (mean of trials)" in D.format_table(table)
    # the analysis alone writes it again
    first = paths.influence_mean(out, "Ours").read_bytes()
    paths.influence_mean(out, "Ours").unlink()
    assert cli.analyze_main(["-o", str(out)]) == 0
    assert paths.influence_mean(out, "Ours").read_bytes() == first


# --------------------------------------------------------------------------- the flips
def test_flips_belong_to_the_data_set_not_to_a_trial(tmp_path):
    cfg = C.Config(output=str(tmp_path), dataset="mnist5k", label_noise=0.1, data_dir=str(tmp_path))
    trials = [engine.load_prepared(cfg, s) for s in (0, 1)]
    flips = []
    for d in trials:
        image = data.source_index(d.train_paths)
        assert 240 < d.flipped.sum() < 360  # 400 of the 4,000 rows a training split is drawn from
        flips.append(dict(zip(image[d.flipped], d.train_y[d.flipped])))
        assert np.all(d.train_y[d.flipped] != d.original_y[d.flipped])
        assert np.array_equal(d.train_y[~d.flipped], d.original_y[~d.flipped])
    images = [set(data.source_index(d.train_paths)) for d in trials]
    common = images[0] & images[1]
    assert len(common) > 1500
    assert {i: y for i, y in flips[0].items() if i in common} == {i: y for i, y in flips[1].items() if i in common}
    assert sum(i in common for i in flips[0]) > 100
    # another seed of the noise: other rows
    other = engine.load_prepared(C.replace(cfg, label_noise_seed=1), 0)
    assert set(data.source_index(other.train_paths)[other.flipped]) != set(flips[0])
    # a training split that is the whole pool has exactly round(p * N) flips
    y = np.arange(1000) % 7
    ids = np.random.default_rng(0).permutation(1000) + 50
    new, m = noise.flip_rows(y, ids, ids, 0.25, 7, seed=4)
    assert m.sum() == 250 and np.all(new[m] != y[m])
    again, m2 = noise.flip_rows(y[::-1], ids[::-1], ids, 0.25, 7, seed=4)  # order does not matter
    assert np.array_equal(m2[::-1], m) and np.array_equal(again[::-1], new)


def test_identities_with_and_without_label_noise():
    # without label noise the seed is not part of any identity: the same as before
    base = C.Config()
    assert "label_noise_seed" not in base.train_identity()
    assert view.score_identity(C.Config(label_noise_seed=7), "Hara") == view.score_identity(base, "Hara")
    assert set(base.train_identity()) == {
        "dataset", "label_noise", "data_digest", "model", "width", "lr", "lr_schedule", "lr_final",
        "lr_decay_epochs", "batch_size", "n_epochs", "augment", "smooth"}
    noisy = C.Config(label_noise=0.1)
    assert noisy.train_identity()["label_noise_seed"] == 0
    assert C.Config(label_noise=0.1, label_noise_seed=2).train_identity() != noisy.train_identity()
    for bad in (-1, None):
        with pytest.raises(ValueError, match="--label-noise-seed"):
            C.Config(label_noise_seed=bad).validate()


# --------------------------------------------------------------------------- Python API
def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGD_INFLUENCE_DATA", str(tmp_path / "data"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = scope["out"]
    assert isinstance(out, Path) and (tmp_path / out / "summary" / "summary.csv").exists()
    import sgd_influence

    mean = sgd_influence.scores(out, "Ours")
    assert tuple(mean.columns) == artifacts.MEAN_COLUMNS and len(mean) == 3000
    assert mean["influence"].is_monotonic_increasing and (mean["n_trials"] == 1).all()
    one = sgd_influence.scores(out, "Ours", seed=0)
    assert np.allclose(np.sort(one["influence"]), np.sort(mean["influence"]))
    assert "n_trials" in capsys.readouterr().out.splitlines()[-11]  # the header of the 10 rows
    with pytest.raises(FileNotFoundError, match="Ours"):
        sgd_influence.scores(out, "Hara", seed=3)
    with pytest.raises(TypeError, match="n_trails"):
        sgd_influence.run(preset="tiny", n_trails=2)
    assert sgd_influence.Config is C.Config


def test_import_stays_light():
    code = ("import sys, sgd_influence\n"
            "heavy = [m for m in ('sgd_influence.api', 'sgd_influence.pipeline', 'distributed') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(sgd_influence.run) and 'sgd_influence.pipeline' in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
