"""Saved identities and folder claims (sgd_influence.folders): another influence window in
the same output folder keeps the other window's results beside the current ones (named by
their window), reuses the training run, and brings them back when that window is run again."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from synth import small_run_args, write_csv_dataset

import train_infl_eval
from sgd_influence import cli, fileio, folders, paths
from sgd_influence import config as C

WINDOWED = ("Hara", "Ours")  # methods whose influence depends on the window
SCORED = ("Hara", "Ours", "Random", paths.FLOOR_FOLDER)  # every retrain replays the window


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_csv_dataset(tmp_path_factory.mktemp("windows"))


def _flags(data, out, window, *extra):
    return small_run_args(data, out, "--model", "logreg", "-e", "3", "--infl-epochs", str(window),
                          "--methods", "Hara", "Ours", "Random", "--noise-floor-k", "2",
                          "--noise-floor-draws", "1", *extra)


def _results(out) -> dict[str, bytes]:
    """Every influence and score CSV of ``out`` by path."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for phase in ("influence", "score") for p in sorted((out / phase).rglob("*.csv"))}


def _kept(rel: str, tag: str) -> str:
    """Where a file of the current window's folders goes when that window is kept."""
    phase, name, file = rel.split("/")
    keep = name in (WINDOWED if phase == "influence" else SCORED)
    return f"{phase}/{paths.variant(name, tag) if keep else name}/{file}"


def _tree(folder) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_another_window_keeps_the_first_and_brings_it_back(data, tmp_path, logs):
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1)) == 0
    first = _results(out)
    trained = _tree(out / "train")

    assert train_infl_eval.main(_flags(data, out, 2)) == 0  # no --overwrite needed
    assert _tree(out / "train") == trained  # the training run reused, not touched
    second = _results(out)
    for rel, content in first.items():  # nothing of the first window lost or changed
        assert second[_kept(rel, "last1")] == content, rel
    assert paths.influence(out, "Random", 0).read_bytes() == first["influence/Random/influence_0.csv"]
    for name in SCORED[:3]:  # this window's retrains replay its two epochs
        assert pd.read_csv(paths.score(out, name, 4, 0))["epoch"].tolist() == [2, 3]
        assert pd.read_csv(paths.score(out, f"{name}@last1", 4, 0))["epoch"].tolist() == [3]
    assert paths.influence(out, "Hara", 0).read_bytes() != first["influence/Hara/influence_0.csv"]

    # the summary shows both windows; the kept one is tested against its own Random and floor
    summary = pd.read_csv(paths.summary(out))
    assert {"Hara", "Hara@last1", "Random@last1", "Noise floor", "Noise floor@last1"} <= set(summary["method"])
    floors = summary[(summary["row"] == "floor") & summary["seed"].isna()].set_index("method")
    tests = pd.read_csv(paths.paired_tests(out))
    kept = tests[(tests["method"] == "Hara@last1") & (tests["n_drops"] == 4)].set_index("baseline")
    assert set(kept.index) == {"Random@last1", "No Removal"}
    assert kept.loc["Random@last1", "floor_sd"] == pytest.approx(floors.loc["Noise floor@last1", "test_accuracy"])
    cur = tests[(tests["method"] == "Hara") & (tests["baseline"] == "Random")]
    assert cur["floor_sd"].iloc[0] == pytest.approx(floors.loc["Noise floor", "test_accuracy"])
    means = pd.read_csv(paths.influence_mean(out, "Hara@last1"))
    assert means["n_trials"].max() == 1  # the kept window is averaged on its own

    logs.clear()
    assert train_infl_eval.main(_flags(data, out, 1)) == 0  # the first window again
    assert any("nothing to do" in m for m in logs.at(logging.INFO))  # all of it brought back
    third = _results(out)
    for rel, content in first.items():
        assert third[rel] == content, rel
    for rel, content in second.items():
        if not rel.startswith(("influence/Random/",)) and "@" not in rel:
            assert third[_kept(rel, "last2")] == content, rel
    assert _tree(out / "train") == trained


def test_eval_alone_brings_a_kept_window_back_and_refuses_one_never_computed(data, tmp_path, logs):
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1, "--methods", "Ours")) == 0
    assert train_infl_eval.main(_flags(data, out, 2, "--methods", "Ours")) == 0
    ours_1 = paths.influence(out, "Ours@last1", 0).read_bytes()
    eval_flags = ["-o", str(out), "--methods", "Ours", "-r", "0", "4", "8", "--noise-floor-draws", "0",
                  "--jobs", "1"]
    assert cli.eval_main(eval_flags + ["--infl-epochs", "1"]) == 0
    assert paths.influence(out, "Ours", 0).read_bytes() == ours_1
    assert paths.influence(out, "Ours@last2", 0).exists()
    before = _results(out)
    logs.clear()
    assert cli.eval_main(eval_flags + ["--infl-epochs", "3"]) == 2  # computed in no folder
    errors = logs.at_least(logging.ERROR)
    assert len(errors) == 1 and "window last3" in errors[0] and "last1, last2" in errors[0] and "influence phase" in errors[0]
    assert _results(out) == before  # nothing moved


def test_a_kept_folder_of_another_configuration_is_refused_unless_overwrite(data, tmp_path):
    out = tmp_path / "o"
    cfg = C.Config(output=str(out), model="logreg", n_epochs=3, infl_epochs=1, methods=("Ours",))
    root = paths.influence_dir(out, "Ours")
    fileio.write_json(paths.method_identity(out, "Ours"), folders.influence_identity(cfg, "Ours"))
    fileio.write_text(paths.influence(out, "Ours", 0), "x")
    other = C.replace(cfg, lr=0.5)  # kept for window 1 by another run's configuration
    fileio.write_json(folders.kept_folder(root, 1) / "config.json", folders.influence_identity(other, "Ours"))
    fileio.write_text(folders.kept_folder(root, 1) / "influence_0.csv", "y")
    wider = C.replace(cfg, infl_epochs=2)
    with pytest.raises(C.ConfigMismatch, match="Ours@last1.*--overwrite"):
        folders.claim_influence(wider, "Ours")
    assert paths.influence(out, "Ours", 0).read_text() == "x"  # nothing moved
    assert not folders.claim_influence(C.replace(wider, overwrite=True), "Ours")
    assert paths.influence(out, "Ours@last1", 0).read_text() == "x"
    assert folders.read_identity(paths.method_identity(out, "Ours")) == folders.influence_identity(wider, "Ours")


@pytest.mark.parametrize("rows, kept", [(1, None), (2, "last2")])
def test_scores_saved_without_their_window_get_the_window_they_replayed(tmp_path, rows, kept):
    """A score identity of Random (or the floor) written before the window was part of it:
    the rows of its files tell the window; the same is reused, another is kept beside."""
    out = tmp_path / "o"
    cfg = C.Config(output=str(out), model="logreg", n_epochs=3, infl_epochs=1, methods=("Random",))
    old = {k: v for k, v in folders.score_identity(cfg, "Random").items() if k != "infl_epochs"}
    fileio.write_json(paths.score_method_identity(out, "Random"), old)
    score = paths.score(out, "Random", 4, 0)
    fileio.write_text(score, "head\n" + "".join(f"{r}\n" for r in range(rows)))
    same = folders.claim_scores(cfg, "Random")
    assert same == (kept is None)
    if kept is None:
        assert score.exists()
    else:
        assert paths.score(out, f"Random@{kept}", 4, 0).exists() and not score.exists()
        assert folders.read_identity(paths.score_method_identity(out, f"Random@{kept}"))["infl_epochs"] == rows
    assert folders.read_identity(paths.score_method_identity(out, "Random")) == folders.score_identity(cfg, "Random")


def test_window_is_part_of_every_score_identity_but_not_with_retrain_all():
    cfg = C.Config(model="logreg", n_epochs=3, infl_epochs=1)
    for method in ("Random", "IF", None):
        assert folders.score_identity(cfg, method)["infl_epochs"] == 1
        assert "infl_epochs" not in folders.score_identity(C.replace(cfg, retrain_all=True), method)
    assert "infl_epochs" not in folders.influence_identity(cfg, "Random")
    assert paths.split_variant(paths.variant("Hara", paths.window_tag(0))) == ("Hara", "all")
    assert paths.split_variant("Noise floor") == ("Noise floor", None)


def test_influence_alone_takes_the_scores_of_its_window_along(data, tmp_path):
    """The influence phase alone with another window: the method's scores of the first
    window are kept with its influence results, not shown beside the new window's."""
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1, "--methods", "Ours")) == 0
    first = _results(out)
    infl = ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
            "--test-csv", str(data["test"]), "--model", "logreg", "-e", "3", "--batch-size", "16",
            "--lr", "0.05", "--methods", "Ours", "--seed", "0", "--infl-epochs", "2"]
    assert cli.infl_main(infl) == 0
    assert paths.influence(out, "Ours", 0).exists() and not paths.score_dir(out, "Ours").exists()
    for rel, content in first.items():
        if rel.startswith(("influence/Ours/", "score/Ours/")):
            assert (out / _kept(rel, "last1")).read_bytes() == content, rel
    assert cli.infl_main(infl[:-1] + ["1"]) == 0  # back: the scores with it
    assert _results(out) == {**first, **{k: v for k, v in _results(out).items() if "@last2" in k}}


def test_with_retrain_all_the_kept_window_shares_random_and_the_floor(data, tmp_path):
    """-ra retrains every epoch: Random's scores and the floor hold for every window, so
    they stay where they are and the kept window is tested against them."""
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1, "-ra", "--methods", "Ours", "Random")) == 0
    random_1 = paths.score(out, "Random", 4, 0).read_bytes()
    assert train_infl_eval.main(_flags(data, out, 2, "-ra", "--methods", "Ours", "Random")) == 0
    assert paths.score(out, "Random", 4, 0).read_bytes() == random_1  # reused, not kept aside
    assert not paths.score_dir(out, "Random@last1").exists()
    assert paths.score(out, "Ours@last1", 4, 0).exists()
    summary = pd.read_csv(paths.summary(out))
    floor = summary[(summary["row"] == "floor") & summary["seed"].isna()]
    assert floor["method"].tolist() == ["Noise floor"]
    tests = pd.read_csv(paths.paired_tests(out))
    kept = tests[(tests["method"] == "Ours@last1") & (tests["n_drops"] == 4)].set_index("baseline")
    assert set(kept.index) == {"Random", "No Removal"}
    assert kept.loc["Random", "floor_sd"] == pytest.approx(floor["test_accuracy"].iloc[0])


def test_one_method_run_alone_with_another_window_never_mixes_windows_in_the_analysis(data, tmp_path):
    """The pipeline at window 1, then Hara alone at window 2 (influence, then evaluation):
    the other methods' window-1 results and the floor are kept as window 1's, so the
    analysis pairs each window's results with the Random and floor of that window only."""
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1)) == 0
    alone = ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
             "--test-csv", str(data["test"]), "--model", "logreg", "-e", "3", "--batch-size", "16",
             "--lr", "0.05", "--methods", "Hara", "--infl-epochs", "2"]
    assert cli.infl_main(alone + ["--seed", "0"]) == 0
    assert cli.eval_main(alone + ["-nt", "1", "-r", "0", "4", "8", "--noise-floor-k", "2",
                                  "--noise-floor-draws", "1", "--jobs", "1"]) == 0
    assert cli.analyze_main(["-o", str(out)]) == 0
    summary = pd.read_csv(paths.summary(out))
    labels = set(summary["method"])
    assert {"Hara", "Hara@last1", "Ours@last1", "Random@last1", "Noise floor", "Noise floor@last1"} <= labels
    assert not {"Ours", "Random"} & labels  # no window-1 result under a current name
    tests = pd.read_csv(paths.paired_tests(out))
    for m, base in zip(tests["method"], tests["baseline"]):
        if base != "No Removal":
            assert paths.split_variant(m)[1] == paths.split_variant(base)[1], (m, base)
    floors = summary[(summary["row"] == "floor") & summary["seed"].isna()].set_index("method")
    ours = tests[(tests["method"] == "Ours@last1") & (tests["baseline"] == "Random@last1")]
    assert ours["floor_sd"].iloc[0] == pytest.approx(floors.loc["Noise floor@last1", "test_accuracy"])


def test_overwrite_keeps_the_kept_windows_and_shows_only_this_runs(data, tmp_path):
    """--overwrite replaces the current results of another configuration; the kept
    windows stay (docs/outputs.md), left out of the analysis of the new training run, and
    come back when their configuration is run again."""
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1)) == 0
    first = _results(out)
    assert train_infl_eval.main(_flags(data, out, 2)) == 0
    kept = {k: v for k, v in _results(out).items() if "@last1" in k}
    assert kept
    assert train_infl_eval.main(_flags(data, out, 2, "--lr", "0.02", "--overwrite")) == 0
    now = _results(out)
    assert {k: now.get(k) for k in kept} == kept  # still there, unchanged
    labels = set(pd.read_csv(paths.summary(out))["method"])
    assert not any("@" in m for m in labels), labels  # not this training run's: not shown
    assert train_infl_eval.main(_flags(data, out, 1, "--overwrite")) == 0  # lr 0.05 again
    assert {k: v for k, v in _results(out).items() if "@" not in k} == first
