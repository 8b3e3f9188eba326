"""Unit tests of the evaluation phase and the analysis (no real data files)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from synth import make_dataset

from sgd_influence import analyze, fileio, paths, store, view
from sgd_influence import config as C
from sgd_influence import eval as ev
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.train import run_training
from sgd_influence.trajectory import load_final_state


def _cfg(tmp_path, **kw) -> C.Config:
    return C.Config(output=str(tmp_path), **kw)


def test_plan_jobs_shares_no_removal_and_skips_large_n(tmp_path, caplog):
    cfg = _cfg(tmp_path, remove_n_list=(0, 10, 100, 10, 5000), methods=("Ours", "Random"),
               noise_floor_k=(1, 3, 100), noise_floor_draws=2)
    jobs, skipped = ev.plan_jobs(cfg, 3, n_train=100)
    assert skipped == [100, 5000]
    assert jobs[0] == ev.EvalJob(3, 0, ("Ours", "Random"))
    assert jobs[1:3] == [ev.EvalJob(3, 10, ("Ours",)), ev.EvalJob(3, 10, ("Random",))]
    # then the noise floor: every k below the training size, two draws each, no method
    floor = jobs[3:]
    assert [(j.n, j.draw) for j in floor] == [(1, 0), (1, 1), (3, 0), (3, 1)]
    assert all(j.is_floor and j.methods == () and j.needs_influence is None for j in floor)
    assert floor[3].targets(tmp_path) == [paths.floor_score(tmp_path, 3, 1, 3)]
    assert floor[3].label == "retrain noise floor k=3 draw 1 seed 3"
    assert jobs[1].needs_influence == "Ours" and jobs[0].needs_influence is None
    assert len(ev.plan_jobs(C.replace(cfg, noise_floor_draws=0), 3, 100)[0]) == 3
    assert jobs[0].targets(tmp_path) == [paths.score(tmp_path, m, 0, 3) for m in ("Ours", "Random")]
    assert jobs[0].label == "retrain No Removal seed 3"
    caplog.set_level(logging.WARNING)
    floor_warnings = [r.getMessage() for r in caplog.records if "--noise-floor-k" in r.getMessage()]
    assert floor_warnings and "skipping 100" in floor_warnings[0]  # k = 100: not below 100 samples
    caplog.clear()
    ev.warn_skipped(skipped, 100)
    assert len(caplog.records) == 1 and "100 5000" in caplog.records[0].getMessage()
    with pytest.raises(ValueError):
        ev.EvalJob(0, 5, ("Ours", "Random"))


def _influence_file(tmp_path, method, seed, rows, scores):
    df = pd.DataFrame({"x:image": [f"im/{r}.png" for r in rows], "y:label": 0, "influence": scores,
                       "datasource_index": rows}).sort_values("influence")
    fileio.write_csv(paths.influence(tmp_path, method, seed), df)


def test_removal_mask_maps_datasource_index_to_positions(tmp_path):
    cfg = _cfg(tmp_path)
    data = SimpleNamespace(n_train=5, train_rows=np.array([10, 11, 13, 14, 17]))
    _influence_file(tmp_path, "Ours", 0, [10, 11, 13, 14, 17], [0.5, -3.0, 0.1, -1.0, 2.0])
    mask = ev.removal_mask(cfg, 0, "Ours", 2, data)
    assert mask.tolist() == [False, True, False, True, False]  # rows 11 and 14 are the worst two
    _influence_file(tmp_path, "Hara", 0, [10, 11, 12, 14, 17], [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="datasource_index 12"):
        ev.removal_mask(cfg, 0, "Hara", 5, data)
    _influence_file(tmp_path, "Random", 0, [10, 11], [0, 1])
    with pytest.raises(ValueError, match="2 rows"):
        ev.removal_mask(cfg, 0, "Random", 1, data)
    with pytest.raises(FileNotFoundError):
        ev.removal_mask(cfg, 1, "Ours", 1, data)


def _rows(test_acc, epochs=(1, 2)) -> pd.DataFrame:
    return pd.DataFrame([dict(epoch=e, val_loss=1.0 / e, test_loss=1.0 / e, val_accuracy=test_acc - 0.01,
                              test_accuracy=test_acc if e == epochs[-1] else 0.1) for e in epochs])


def _score(tmp_path, method, n, seed, test_acc, epochs=(1, 2)):
    fileio.write_csv(paths.score(tmp_path, method, n, seed),
                     ev.score_frame(_rows(test_acc, epochs), method, n, seed, 1000))


def _floor(tmp_path, k, draw, seed, test_acc):
    fileio.write_csv(paths.floor_score(tmp_path, k, draw, seed),
                     ev.score_frame(_rows(test_acc), ev.FLOOR_METHOD, k, seed, 1000, draw=draw))


REFERENCE_SCORE = ["val_loss", "test_loss", "val_accuracy", "test_accuracy"]


def test_score_files_lead_with_the_reference_columns(tmp_path):
    _score(tmp_path, "Ours", 10, 0, 0.9)
    _floor(tmp_path, 2, 1, 0, 0.9)
    sc = pd.read_csv(paths.score(tmp_path, "Ours", 10, 0))
    assert list(sc.columns[:4]) == REFERENCE_SCORE
    assert list(sc.columns[4:]) == ["method", "n", "seed", "epoch", "n_train"]
    fl = pd.read_csv(paths.floor_score(tmp_path, 2, 1, 0))
    assert list(fl.columns) == REFERENCE_SCORE + ["method", "n", "seed", "epoch", "n_train", "draw"]
    assert (fl["method"] == "Noise floor").all() and (fl["draw"] == 1).all()
    # the reference's reader takes n and the seed from the last parts of the file name
    parts = paths.floor_score(tmp_path, 2, 1, 0).stem.split("_")
    assert (parts[-3], parts[-1]) == ("2", "0")
    assert ev.read_scores(tmp_path)["method"].tolist() == ["Ours", "Ours"]  # floor files apart
    assert len(ev.read_floor(tmp_path)) == 2


def test_no_removal_is_copied_to_the_other_methods(tmp_path):
    _score(tmp_path, "Hara", 0, 2, 0.9)
    cfg = _cfg(tmp_path)
    ev.run_eval_job(cfg, ev.EvalJob(2, 0, C.METHODS))  # no data needed: copies
    for m in C.METHODS:
        df = pd.read_csv(paths.score(tmp_path, m, 0, 2))
        assert (df["method"] == m).all() and df["test_accuracy"].iloc[-1] == 0.9


def _fake_folder(tmp_path):
    accs = {"Hara": [0.93, 0.95], "Ours": [0.92, 0.96], "Random": [0.88, 0.90]}
    for seed, base in ((0, 0.90), (1, 0.92)):
        for m in C.METHODS:
            _score(tmp_path, m, 0, seed, base)
            for n, a in zip((10, 100), accs[m]):
                _score(tmp_path, m, n, seed, a + 0.01 * seed)


def test_analyze_summary_figure_cache_and_table(tmp_path, capsys):
    _fake_folder(tmp_path)
    summary = analyze.analyze(tmp_path)
    out = capsys.readouterr().out
    disk = pd.read_csv(paths.summary(tmp_path))
    # the reference's layout first: its four scores, method, seed, n_drops, mean, std
    assert list(disk.columns[:9]) == REFERENCE_SCORE + ["method", "seed", "n_drops", "mean", "std"]
    assert list(disk.columns) == list(analyze.SUMMARY_COLUMNS)
    # trials: No Removal once per seed + 3 methods x 2 n x 2 seeds; mean and std per group
    assert len(disk) == len(summary) == 2 + 12 + 2 * 7
    trials = disk[disk["row"] == "trial"]
    assert (trials["epoch"] == 2).all()  # the final epoch only
    base = trials[trials["n_drops"] == 0]
    assert base["method"].tolist() == ["No Removal", "No Removal"] and base["seed"].tolist() == [0, 1]
    assert not (disk["n_drops"] == 0).any() or set(disk.loc[disk["n_drops"] == 0, "method"]) == {"No Removal"}
    mean = disk[(disk["row"] == "mean") & (disk["method"] == "Ours") & (disk["n_drops"] == 100)]
    std = disk[(disk["row"] == "std") & (disk["method"] == "Ours") & (disk["n_drops"] == 100)]
    assert mean["test_accuracy"].item() == pytest.approx(0.965)
    assert std["test_accuracy"].item() == pytest.approx(np.std([0.96, 0.97], ddof=1))
    assert mean["seed"].isna().all() and (mean["n_seeds"] == 2).all()
    assert (mean["mean"] == "mean").all() and mean["std"].isna().all()
    assert (std["std"] == "std").all() and std["mean"].isna().all()
    assert trials["mean"].isna().all() and trials["std"].isna().all()
    assert paths.figure(tmp_path).read_bytes()[:4] == b"\x89PNG"
    storage = pd.read_csv(paths.storage_table(tmp_path))  # no training run: the paper's settings
    assert storage["setting"].iloc[0] == "MNIST, paper settings, batch 64"
    assert "0 (No Removal)  0.9100 ± 0.0141" in out
    assert "Ours, final parameters (theta)" in out and "T = 782 window steps" in out
    # selection
    sel = analyze.analyze(tmp_path, methods=["Ours"], ns=[0, 100], seeds=[1], show=False)
    assert set(sel["method"]) == {"Ours", "No Removal"} and set(sel["n_drops"]) == {0, 100}
    assert sel.loc[sel["row"] == "std", "test_accuracy"].isna().all()  # one seed: no std
    with pytest.raises(FileNotFoundError, match="no score files"):
        analyze.analyze(tmp_path / "empty")


def test_noise_floor_rows_come_from_the_floor_retrains(tmp_path):
    _fake_folder(tmp_path)
    floor_acc = {0: [0.89, 0.91, 0.92], 1: [0.93, 0.915, 0.925]}  # k = 1, 2 (draw 0), 2 (draw 1)
    for seed, accs in floor_acc.items():
        for (k, d), a in zip([(1, 0), (2, 0), (2, 1)], accs):
            _floor(tmp_path, k, d, seed, a)
    summary = analyze.analyze(tmp_path, show=False)
    fl = summary[summary["method"] == "Noise floor"]
    runs = fl[fl["row"] == "trial"]
    assert len(runs) == 6 and sorted(runs["n_drops"].unique()) == [1, 2]
    assert runs["draw"].notna().all() and (runs["epoch"] == 2).all()
    per_seed = fl[(fl["row"] == "floor") & fl["seed"].notna()].set_index("seed")
    no_removal = {0: 0.90, 1: 0.92}  # each seed's No Removal run is one more variant
    for seed, accs in floor_acc.items():
        want = np.std(accs + [no_removal[seed]], ddof=1)
        assert per_seed.loc[seed, "test_accuracy"] == pytest.approx(want)
    pooled = fl[(fl["row"] == "floor") & fl["seed"].isna()]
    want = np.sqrt(np.mean([np.var(a + [no_removal[s]], ddof=1) for s, a in floor_acc.items()]))
    assert pooled["test_accuracy"].item() == pytest.approx(want)
    assert analyze.noise_floor(summary) == pytest.approx(want)
    # the removal statistics are not touched by the floor retrains
    assert (summary[summary["row"] == "mean"]["method"] != "Noise floor").all()


def _paired_folder(tmp_path, shift_hara, jitter_ours, seeds=6, floor_sd=0.002):
    """Random varies strongly across seeds; Hara = Random + shift; Ours = Random + jitter."""
    rng = np.random.default_rng(0)
    for s in range(seeds):
        level = 0.85 + 0.05 * rng.random()  # seed-to-seed spread much larger than the floor
        _score(tmp_path, "Hara", 0, s, level)
        _score(tmp_path, "Random", 50, s, level)
        _score(tmp_path, "Hara", 50, s, level + shift_hara + rng.normal(0, floor_sd))
        _score(tmp_path, "Ours", 50, s, level + jitter_ours[s])
        for d in range(4):
            _floor(tmp_path, 1, d, s, level + rng.normal(0, floor_sd))


def test_paired_test_flags_a_planted_difference_and_not_one_inside_the_floor(tmp_path):
    ours = np.random.default_rng(1).normal(0, 0.002, 6)  # as large as the floor
    _paired_folder(tmp_path, shift_hara=0.02, jitter_ours=ours)
    analyze.analyze(tmp_path, show=False)
    tests = pd.read_csv(paths.paired_tests(tmp_path))
    assert list(tests.columns) == list(analyze.PAIRED_COLUMNS)
    vs_random = tests[tests["baseline"] == "Random"].set_index("method")
    assert vs_random.loc["Hara", "verdict"] == "better" and vs_random.loc["Hara", "p_t"] < 0.001
    assert vs_random.loc["Hara", "mean_diff"] == pytest.approx(0.02, abs=0.003)
    assert vs_random.loc["Ours", "verdict"] == "within noise"
    assert vs_random.loc["Hara", "n_seeds"] == 6 and 0.001 < vs_random.loc["Hara", "floor_sd"] < 0.004
    # the difference of one seed is the difference of its two runs
    s = pd.read_csv(paths.summary(tmp_path))
    t = s[(s["row"] == "trial") & (s["n_drops"] == 50)]
    acc = {m: t[t["method"] == m].set_index("seed")["test_accuracy"] for m in ("Hara", "Random")}
    d = [acc["Hara"][k] - acc["Random"][k] for k in range(6)]
    assert vs_random.loc["Hara", "mean_diff"] == pytest.approx(np.mean(d))
    assert vs_random.loc["Hara", "sd_diff"] == pytest.approx(np.std(d, ddof=1))


def _kept_score(tmp_path, folder, method, n, seed, test_acc):
    """A score file of a kept window's folder (``score/Hara@last1``): the method's own name inside."""
    fileio.write_csv(paths.score(tmp_path, folder, n, seed),
                     ev.score_frame(_rows(test_acc), method, n, seed, 1000))


def test_kept_windows_are_rows_of_their_own_tested_against_their_own_random_and_floor(tmp_path):
    rng = np.random.default_rng(3)
    for s in range(4):
        level, other = 0.85 + 0.05 * rng.random(), 0.80 + 0.05 * rng.random()
        _score(tmp_path, "Hara", 0, s, level)
        _score(tmp_path, "Random", 50, s, level)
        _score(tmp_path, "Hara", 50, s, level + 0.02 + rng.normal(0, 0.001))
        _kept_score(tmp_path, "Hara@last1", "Hara", 0, s, level)
        _kept_score(tmp_path, "Random@last1", "Random", 50, s, other)
        _kept_score(tmp_path, "Hara@last1", "Hara", 50, s, other - 0.01 + rng.normal(0, 0.001))
        for d in range(3):
            _floor(tmp_path, 1, d, s, level + rng.normal(0, 0.001))
            kept = paths.score_dir(tmp_path, "noise_floor@last1") / paths.floor_score(tmp_path, 1, d, s).name
            fileio.write_csv(kept, ev.score_frame(_rows(other + rng.normal(0, 0.02)), ev.FLOOR_METHOD, 1,
                                                  s, 1000, draw=d))
    summary = analyze.analyze(tmp_path, show=False)
    assert list(dict.fromkeys(summary["method"])) == [
        "No Removal", "Hara", "Hara@last1", "Random", "Random@last1", "Noise floor", "Noise floor@last1"]
    floors = {m: analyze.noise_floor(summary, window=w) for m, w in (("cur", None), ("kept", "last1"))}
    assert floors["kept"] > 5 * floors["cur"] > 0
    tests = pd.read_csv(paths.paired_tests(tmp_path))
    t = tests[tests["n_drops"] == 50].set_index(["method", "baseline"])
    assert t.loc[("Hara", "Random"), "floor_sd"] == pytest.approx(floors["cur"])
    assert t.loc[("Hara@last1", "Random@last1"), "floor_sd"] == pytest.approx(floors["kept"])
    trial = summary[(summary["row"] == "trial") & (summary["n_drops"] == 50)]
    acc = {m: trial[trial["method"] == m].set_index("seed")["test_accuracy"] for m in ("Hara@last1", "Random@last1")}
    want = np.mean([acc["Hara@last1"][k] - acc["Random@last1"][k] for k in range(4)])
    assert t.loc[("Hara@last1", "Random@last1"), "mean_diff"] == pytest.approx(want)
    assert want == pytest.approx(-0.01, abs=0.002)
    assert ("Hara@last1", "Random") not in t.index
    assert f"Kept windows' noise floors: last1 sd {floors['kept']:.4f}" in analyze.accuracy_table(summary, tests)
    # a selection by method takes its kept windows along
    sel = analyze.analyze(tmp_path, methods=["Hara"], show=False)
    assert {"Hara", "Hara@last1"} <= set(sel["method"]) and "Random@last1" not in set(sel["method"])


def test_a_consistent_difference_smaller_than_the_floor_is_not_real():
    same = analyze.paired_test(np.array([0.001, 0.0012, 0.0009, 0.0011, 0.001, 0.001]), floor_sd=0.01)
    assert same["p_t"] < 0.05 and same["verdict"] == "within noise"
    assert same["floor_diff"] == pytest.approx(2 * np.sqrt(2 / 6) * 0.01)
    big = analyze.paired_test(np.array([-0.05, -0.04, -0.06, -0.05]), floor_sd=0.01)
    assert big["verdict"] == "worse"
    assert analyze.paired_test(np.array([0.3]), 0.01)["verdict"] == "one seed: no test"


def test_identical_differences_are_not_a_significant_result():
    """Two seeds with the same difference to Random: the t test has no spread to work
    with, so it is not computed; no star, whatever the floor."""
    for floor in (0.0, float("nan"), 0.001):
        res = analyze.paired_test(np.array([-0.02, -0.02]), floor_sd=floor)
        assert np.isnan(res["p_t"]) and np.isnan(res["t"]) and np.isnan(res["p_wilcoxon"])
        assert res["verdict"] == "no spread: no test"
    tests = pd.DataFrame([{"method": "TracIn", "baseline": "Random", "n_drops": 100,
                           **analyze.paired_test(np.array([-0.02, -0.02]), float("nan"))}])
    assert analyze.beyond_floor(tests) == {}
    summary = _fake_summary_for_no_spread()
    text = analyze.accuracy_table(summary, tests)
    assert "No test (every seed differs from Random by the same amount" in text
    assert "TracIn at n = 100" in text and " *" not in text


def _fake_summary_for_no_spread() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for m, n, acc in (("TracIn", 0, 0.9), ("TracIn", 100, 0.88), ("Random", 0, 0.9), ("Random", 100, 0.9)):
            rows.append({"method": m, "seed": seed, "n": n, "epoch": 1, "val_loss": 0.3,
                         "test_loss": 0.3, "val_accuracy": acc, "test_accuracy": acc})
    return analyze.summarize(pd.DataFrame(rows))


def test_growth_factor_is_shown_in_summary_and_printed(tmp_path, capsys):
    _fake_folder(tmp_path)
    for seed, (h, o) in enumerate([(0.5, 100.0), (2.0, 400.0)]):
        fileio.write_json(paths.influence_stats(tmp_path, "Hara", seed), {"u_growth": h})
        fileio.write_json(paths.influence_stats(tmp_path, "Ours", seed), {"u_growth": o})
    summary = analyze.analyze(tmp_path)
    out = capsys.readouterr().out
    tr = summary[(summary["row"] == "trial") & (summary["n_drops"] == 10)].set_index(["method", "seed"])
    assert tr.loc[("Ours", 1), "u_growth"] == 400.0 and tr.loc[("Hara", 0), "u_growth"] == 0.5
    assert np.isnan(tr.loc[("Random", 0), "u_growth"])
    mean = summary[summary["row"] == "mean"].set_index(["method", "n_drops"])
    assert mean.loc[("Ours", 100), "u_growth"] == pytest.approx(200.0)  # geometric mean
    assert mean.loc[("Hara", 10), "u_growth"] == pytest.approx(1.0)
    assert "Hara x1, Ours x200" in out


def test_scores_of_another_evaluation_setting_are_kept_under_their_own_key(tmp_path):
    cfg = C.replace(_cfg(tmp_path), methods=("Ours",))
    view.point(cfg, ("eval",), [0])
    _score(tmp_path, "Ours", 10, 0, 0.5)
    other = C.replace(cfg, retrain_all=True)
    view.point(other, ("eval",), [0])
    assert not paths.score(tmp_path, "Ours", 10, 0).exists()  # -ra: other scores
    assert fileio.read_json(paths.score_method_identity(tmp_path, "Ours")) == view.score_identity(other, "Ours")
    view.point(cfg, ("eval",), [0])
    assert paths.score(tmp_path, "Ours", 10, 0).exists()  # kept, and back
    view.point(C.replace(cfg, overwrite=True), ("eval",), [0])
    assert not paths.score(tmp_path, "Ours", 10, 0).exists()  # --overwrite: to be computed again
    assert len(store.entries(tmp_path, "score", "Ours")) == 2


def test_stale_temporary_files_are_removed_under_the_lock(tmp_path):
    """Holding the folder's lock, no other process writes there: every temporary file
    (a killed run's) is removed before anything is written; finished files stay."""
    from sgd_influence import runlock

    stale = tmp_path / "score" / "Ours" / ".score_delete_worst_1_seed_0.csv.tmp999999999"
    done = tmp_path / "score" / "Ours" / "score_delete_worst_2_seed_0.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("x")
    done.write_text("y")
    with runlock.hold(tmp_path):
        assert not stale.exists()
    assert done.read_text() == "y"


@pytest.mark.parametrize("retrain_all", [False, True])
def test_no_removal_retrain_reproduces_the_trained_model(tmp_path, retrain_all):
    """n = 0 replays (window or, with -ra, every epoch) end at the trained parameters:
    the last score row equals evaluating the final snapshot; one row per replayed epoch."""
    cfg = _cfg(tmp_path, model="cifarnet", width=2, n_epochs=3, infl_epochs=1, batch_size=8,
               retrain_all=retrain_all, methods=("Ours",))
    data = prepare(make_dataset(40, 16, 16, seed=0), 0)
    run_training(cfg, 0, data)
    scores = ev.retrain_scores(cfg, 0, data, removed=None)
    assert scores["epoch"].tolist() == ([1, 2, 3] if retrain_all else [3])
    eng = Engine(model_spec(cfg, data), 0, data)
    eng.net.load_state_dict(load_final_state(tmp_path, 0))
    assert scores.iloc[-1]["test_accuracy"] == eng.evaluate_split("test")[1]
    assert scores.iloc[-1]["val_loss"] == eng.evaluate_split("val")[0]


def test_floor_retrain_leaves_out_k_seeded_random_samples(tmp_path):
    """A noise-floor job replays the window without its seeded draw of k samples."""
    cfg = _cfg(tmp_path, model="cifarnet", width=2, n_epochs=2, infl_epochs=1, batch_size=8,
               methods=("Ours",), remove_n_list=(0,), noise_floor_k=(3,), noise_floor_draws=2)
    data = prepare(make_dataset(40, 16, 16, seed=0), 0)
    run_training(cfg, 0, data)
    m0, m1 = ev.floor_mask(0, 3, 0, 40), ev.floor_mask(0, 3, 1, 40)
    assert m0.sum() == m1.sum() == 3 and not np.array_equal(m0, m1)
    assert np.array_equal(m0, ev.floor_mask(0, 3, 0, 40))  # seeded
    assert not np.array_equal(m0, ev.floor_mask(1, 3, 0, 40))  # by the trial seed too
    jobs = [j for j in ev.plan_jobs(cfg, 0, data.n_train)[0] if j.is_floor]
    assert [(j.n, j.draw) for j in jobs] == [(3, 0), (3, 1)]
    for j in jobs:
        ev.run_eval_job(cfg, j, data)
    got = pd.read_csv(paths.floor_score(tmp_path, 3, 1, 0))
    want = ev.retrain_scores(cfg, 0, data, m1)
    np.testing.assert_array_equal(got[list(ev.VALUES)].to_numpy(), want[list(ev.VALUES)].to_numpy())
    assert not np.array_equal(want["val_loss"], ev.retrain_scores(cfg, 0, data, None)["val_loss"])
    assert (got["method"] == "Noise floor").all() and (got["draw"] == 1).all()
