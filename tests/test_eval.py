"""Unit tests of the evaluation phase, the analysis and the scheduler (no real data files)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from synth import make_dataset

from sgd_influence import analyze, fileio, paths, pipeline
from sgd_influence import config as C
from sgd_influence import eval as ev
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.train import run_training
from sgd_influence.trajectory import load_final_state


def _cfg(tmp_path, **kw) -> C.Config:
    return C.Config(output=str(tmp_path), **kw)


def test_plan_jobs_shares_no_removal_and_skips_large_n(tmp_path, caplog):
    cfg = _cfg(tmp_path, remove_n_list=(0, 10, 100, 10, 5000), methods=("Ours", "Random"))
    jobs, skipped = ev.plan_jobs(cfg, 3, n_train=100)
    assert skipped == [100, 5000]
    assert jobs[0] == ev.EvalJob(3, 0, ("Ours", "Random"))
    assert jobs[1:] == [ev.EvalJob(3, 10, ("Ours",)), ev.EvalJob(3, 10, ("Random",))]
    assert jobs[0].targets(tmp_path) == [paths.score(tmp_path, m, 0, 3) for m in ("Ours", "Random")]
    assert jobs[0].label == "retrain No Removal seed 3"
    caplog.set_level(logging.WARNING)
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


def _score(tmp_path, method, n, seed, test_acc, epochs=(1, 2)):
    rows = [dict(epoch=e, val_loss=1.0 / e, val_acc=test_acc - 0.01, test_loss=1.0 / e,
                 test_acc=test_acc if e == epochs[-1] else 0.1) for e in epochs]
    fileio.write_csv(paths.score(tmp_path, method, n, seed),
                     ev.score_frame(pd.DataFrame(rows), method, n, seed, 1000))


def test_no_removal_is_copied_to_the_other_methods(tmp_path):
    _score(tmp_path, "Hara", 0, 2, 0.9)
    cfg = _cfg(tmp_path)
    ev.run_eval_job(cfg, ev.EvalJob(2, 0, C.METHODS))  # no data needed: copies
    for m in C.METHODS:
        df = pd.read_csv(paths.score(tmp_path, m, 0, 2))
        assert (df["method"] == m).all() and df["test_acc"].iloc[-1] == 0.9


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
    assert list(disk.columns) == list(analyze.SUMMARY_COLUMNS)
    assert len(disk) == len(summary) == 3 * 3 * 2 + 2 * 9
    trials = disk[disk["row"] == "trial"]
    assert (trials["epoch"] == 2).all()  # the final epoch only
    mean = disk[(disk["row"] == "mean") & (disk["method"] == "Ours") & (disk["n"] == 100)]
    std = disk[(disk["row"] == "std") & (disk["method"] == "Ours") & (disk["n"] == 100)]
    assert mean["test_acc"].item() == pytest.approx(0.965)
    assert std["test_acc"].item() == pytest.approx(np.std([0.96, 0.97], ddof=1))
    assert mean["seed"].isna().all() and (mean["n_seeds"] == 2).all()
    assert paths.figure(tmp_path).read_bytes()[:4] == b"\x89PNG"
    storage = pd.read_csv(paths.storage_table(tmp_path))  # no training run: the paper's settings
    assert storage["setting"].iloc[0] == "MNIST, paper settings, batch 64"
    assert "0 (No Removal)  0.9100 ± 0.0141" in out
    assert "Ours, final parameters (theta)" in out and "T = 782 window steps" in out
    # selection
    sel = analyze.analyze(tmp_path, methods=["Ours"], ns=[0, 100], seeds=[1], show=False)
    assert set(sel["method"]) == {"Ours"} and set(sel["n"]) == {0, 100}
    assert sel.loc[sel["row"] == "std", "test_acc"].isna().all()  # one seed: no std
    with pytest.raises(FileNotFoundError, match="no score files"):
        analyze.analyze(tmp_path / "empty")


def test_score_identity_refused_then_cleared_with_overwrite(tmp_path):
    cfg = _cfg(tmp_path)
    ev.prepare_score_folder(cfg)
    _score(tmp_path, "Ours", 10, 0, 0.5)
    other = _cfg(tmp_path, retrain_all=True)
    with pytest.raises(C.ConfigMismatch, match="retrain_all"):
        ev.prepare_score_folder(other)
    assert paths.score(tmp_path, "Ours", 10, 0).exists()
    ev.prepare_score_folder(C.replace(other, overwrite=True))
    assert not paths.score(tmp_path, "Ours", 10, 0).exists()
    assert fileio.read_json(paths.score_identity(tmp_path)) == other.eval_identity()


def test_stale_temporary_files_are_removed(tmp_path):
    import os

    stale = tmp_path / "score" / "Ours" / ".score_delete_worst_1_seed_0.csv.tmp999999999"
    alive = tmp_path / "score" / "Ours" / f".score_delete_worst_2_seed_0.csv.tmp{os.getpid()}"
    stale.parent.mkdir(parents=True)
    stale.write_text("x")
    alive.write_text("x")
    pipeline.clean_stale_tmp(tmp_path)
    assert not stale.exists() and alive.exists()


def test_scheduler_order_prefers_held_seed_and_reports_failure(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    seen = []

    def fake_run(self, task):
        seen.append(task.label)
        if task.kind == "eval" and task.job.n == 7:
            raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(pipeline.Runner, "run", fake_run)
    tasks = [pipeline.Task("train", 1), pipeline.Task("train", 0)]

    def on_done(task):
        if task.kind == "train":
            return [pipeline.Task("infl", task.seed, method=m) for m in ("Random", "Hara")]
        if task.kind == "infl" and task.seed == 0 and task.method == "Random":
            return [pipeline.Task("eval", 0, job=ev.EvalJob(0, 7, ("Random",)))]
        return []

    with pytest.raises(pipeline.PipelineError) as err:
        pipeline.Scheduler(cfg, 1).run(tasks, on_done)
    assert str(err.value) == "retrain Random n=7 seed 0 failed: RuntimeError: boom second line"
    # training first; then the seed this process holds; Hara before Random
    assert seen == ["train seed 0", "train seed 1", "influence Hara seed 1", "influence Random seed 1",
                    "influence Hara seed 0", "influence Random seed 0", "retrain Random n=7 seed 0"]


def test_user_errors_from_tasks_keep_their_message(tmp_path, monkeypatch):
    def fake_run(self, task):
        raise ValueError("--lr: too large")

    monkeypatch.setattr(pipeline.Runner, "run", fake_run)
    with pytest.raises(ValueError, match="^--lr: too large$"):
        pipeline.Scheduler(_cfg(tmp_path), 1).run([pipeline.Task("train", 0)], lambda t: [])


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
    assert scores.iloc[-1]["test_acc"] == eng.evaluate_split("test")[1]
    assert scores.iloc[-1]["val_loss"] == eng.evaluate_split("val")[0]
