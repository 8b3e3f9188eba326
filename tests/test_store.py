"""The result store and its view (sgd_influence.store, sgd_influence.view): results kept
under what they depend on; another setting in the same output folder computes what it
lacks and keeps the rest; another influence window's results are shown beside the
current ones (named by their window); changing a setting back costs nothing."""

from __future__ import annotations

import errno
import logging
import os

import pandas as pd
import pytest
from synth import small_run_args, write_csv_dataset

import train_infl_eval
from sgd_influence import cli, fileio, links, paths, store, view
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
            for phase in ("influence", "score") if (out / phase).is_dir()
            for folder in sorted((out / phase).iterdir()) for p in sorted(folder.glob("*.csv"))}


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


def test_eval_alone_shows_another_window_and_refuses_one_never_computed(data, tmp_path, logs):
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
    assert len(errors) == 1, errors
    assert "influence_0.csv: not found" in errors[0] and "--infl-epochs 1 or 2 (given: 3)" in errors[0]
    assert "influence phase" in errors[0]
    assert _results(out) == before  # the view of the command before


def test_window_is_part_of_every_score_identity_but_not_with_retrain_all():
    cfg = C.Config(model="logreg", n_epochs=3, infl_epochs=1)
    for method in ("Random", "IF", None):
        assert view.score_identity(cfg, method)["infl_epochs"] == 1
        assert "infl_epochs" not in view.score_identity(C.replace(cfg, retrain_all=True), method)
    assert "infl_epochs" not in view.influence_identity(cfg, "Random")
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


def test_other_windows_of_another_training_run_are_not_shown(data, tmp_path):
    """Another window is shown beside the current one only for the same training run:
    after --lr 0.02 the lr 0.05 windows stay in the store, out of the view and the
    analysis, and come back with their configuration."""
    out = tmp_path / "o"
    assert train_infl_eval.main(_flags(data, out, 1)) == 0
    first = _results(out)
    assert train_infl_eval.main(_flags(data, out, 2)) == 0
    both = _results(out)
    assert any("@last1" in k for k in both)
    stored = _mtimes(out)
    assert train_infl_eval.main(_flags(data, out, 2, "--lr", "0.02")) == 0
    assert not any("@" in k for k in _results(out))
    labels = set(pd.read_csv(paths.summary(out))["method"])
    assert not any("@" in m for m in labels), labels  # not this training run's: not shown
    assert {k: v for k, v in _mtimes(out).items() if k in stored} == stored
    assert train_infl_eval.main(_flags(data, out, 1)) == 0  # lr 0.05 and window 1 again
    assert {k: v for k, v in _results(out).items() if "@" not in k} == first
    assert {k: v for k, v in _results(out).items() if "@" in k} == {
        _kept(k, "last2"): v for k, v in both.items() if "@" not in k and not k.startswith("influence/Random")}


# --------------------------------------------------------------------------- the store
def test_key_is_the_identity_and_nothing_else():
    a = {"lr": 0.05, "model": "logreg", "n_epochs": 3}
    assert store.key(a) == store.key(dict(reversed(list(a.items()))))  # order does not matter
    assert store.key(a) != store.key({**a, "lr": 0.02})
    assert store.key(a) != store.key({**a, "width": 8})  # a key more is another identity
    assert len(store.key(a)) == 16


def test_a_link_is_replaced_atomically_and_only_links_are_removed(tmp_path):
    a, b = tmp_path / "store" / "a", tmp_path / "store" / "b"
    a.mkdir(parents=True), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    view_ = tmp_path / "influence" / "Hara"
    links.link(view_, a)
    assert (view_ / "f").read_text() == "a" and not view_.readlink().is_absolute()
    links.link(view_, b)
    assert (view_ / "f").read_text() == "b"
    assert [p.name for p in view_.parent.iterdir()] == ["Hara"]  # no temporary link left
    links.link(view_, None)
    assert not view_.exists() and (b / "f").exists()
    real = tmp_path / "influence" / "Ours"
    real.mkdir()
    links.link(real, None)  # a real folder is not a link: left alone
    assert real.is_dir()


def test_results_of_an_earlier_version_are_moved_aside_and_computed_again(data, tmp_path, logs):
    """A folder written by an earlier version (real train/ and influence/{method} folders,
    a shared identity) is not read: moved to older-version/, and the results computed."""
    out = tmp_path / "o"
    flags = _flags(data, out, 1, "--methods", "Ours")
    for rel in ("train/seed_0/record.npz", "influence/Ours/influence_0.csv", "influence/config.json",
                "score/Ours/score_delete_worst_4_seed_0.csv"):
        fileio.write_text(out / rel, "from an earlier version")
    assert train_infl_eval.main(flags) == 0
    older = list((out / store.OLDER).iterdir())
    assert len(older) == 1
    for rel in ("train/seed_0/record.npz", "influence/Ours/influence_0.csv", "influence/config.json"):
        assert (older[0] / rel).read_text() == "from an earlier version"
    assert (out / "train").is_symlink() and (out / "influence" / "Ours").is_symlink()
    assert paths.influence(out, "Ours", 0).read_text().startswith("x:image")
    assert any("earlier version" in m for m in logs.at(logging.WARNING))


def _mtimes(out) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
            for p in (out / "store").rglob("*") if p.is_file()}


def test_another_setting_keeps_everything_and_changing_it_back_costs_nothing(data, tmp_path, logs, capsys):
    out = tmp_path / "o"
    flags = _flags(data, out, 1, "--methods", "Ours", "Random")
    assert train_infl_eval.main(flags) == 0
    first, stored = _results(out), _mtimes(out)
    assert train_infl_eval.main(flags + ["--lr", "0.02"]) == 0
    assert _results(out) != first
    assert {k: v for k, v in _mtimes(out).items() if k in stored} == stored  # nothing touched
    logs.clear()
    assert train_infl_eval.main(flags) == 0
    assert any("nothing to do" in m for m in logs.at(logging.INFO))
    assert _results(out) == first
    assert {k: v for k, v in _mtimes(out).items() if k in stored} == stored

    # what the store holds: both training runs; prune keeps only what the view links
    capsys.readouterr()
    assert cli.main(["store", "list", "-o", str(out)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("store/train/") for line in listed) == 2
    assert any("settings: --lr: 0.05 -> 0.02" in line and "view: -" in line for line in listed), listed
    assert any("view: influence/Ours" in line and "settings: current" in line for line in listed)
    assert cli.main(["store", "prune", "-o", str(out)]) == 0
    assert all(line.startswith("removed store/") for line in capsys.readouterr().out.splitlines())
    assert len(store.entries(out, "train")) == 1
    assert _results(out) == first and train_infl_eval.main(flags) == 0
    assert any("nothing to do" in m for m in logs.at(logging.INFO))


def test_overwrite_computes_the_current_results_again_and_only_those(data, tmp_path):
    out = tmp_path / "o"
    flags = _flags(data, out, 1, "--methods", "Ours")
    assert train_infl_eval.main(flags + ["--lr", "0.02"]) == 0
    other = _mtimes(out)
    assert train_infl_eval.main(flags) == 0
    first, stored = _results(out), _mtimes(out)
    assert train_infl_eval.main(flags + ["--overwrite"]) == 0
    now = _mtimes(out)
    assert {k: now[k] for k in other} == other  # the other settings' results untouched
    redone = [k for k in stored if k not in other and now.get(k) != stored[k]]
    assert any(k.endswith("influence_0.csv") for k in redone) and any("record.npz" in k for k in redone)
    assert _results(out) == first  # computed again, to the same bytes


def _no_symlinks(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)


def test_where_links_cannot_be_made_a_view_is_a_copy_written_back_to_its_entry(tmp_path, monkeypatch):
    a, b = tmp_path / "store" / "a", tmp_path / "store" / "b"
    a.mkdir(parents=True), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    view_ = tmp_path / "influence" / "Hara"
    _no_symlinks(monkeypatch)
    links.link(view_, a)
    assert links.is_copy(view_) and (view_ / "f").read_text() == "a"
    assert links.view_entry(view_) == a.resolve() and view.links_now(tmp_path) == {view_: "../store/a"}
    (view_ / "new.csv").write_text("written by a task")
    fileio.write_text(view_ / "done.csv", "x")  # its temporary name is never written back
    (view_ / ".half.csv.tmp123").write_text("an unfinished write")
    links.link(view_, b)  # the copy's new files reach its entry before it is replaced
    assert (a / "new.csv").read_text() == "written by a task" and (a / "done.csv").read_text() == "x"
    assert not (a / ".half.csv.tmp123").exists() and (view_ / "f").read_text() == "b"
    assert sorted(p.name for p in view_.parent.iterdir()) == ["Hara"]  # no temporary copy left
    links.link(view_, None)
    assert not view_.exists() and (b / "f").exists()
    real = tmp_path / "influence" / "Ours"
    real.mkdir()
    links.link(real, None)  # a real folder is neither a link nor a copy: left alone
    assert real.is_dir()
    with pytest.raises(fileio.WriteError, match="Ours: cannot write"):
        links.link(real, a)  # nor replaced by one


def test_copies_can_be_asked_for_where_links_work(tmp_path, monkeypatch):
    a = tmp_path / "store" / "a"
    a.mkdir(parents=True)
    monkeypatch.setenv(links.VIEW_ENV, "copy")
    links.link(tmp_path / "train", a)
    assert links.is_copy(tmp_path / "train")
    monkeypatch.delenv(links.VIEW_ENV)
    (tmp_path / "train" / "record.npz").write_text("r")
    links.link(tmp_path / "train", a)  # links again: the copy written back, then replaced
    assert (tmp_path / "train").is_symlink() and (a / "record.npz").read_text() == "r"


def test_without_symbolic_links_a_folder_works_the_same_on_copies(data, tmp_path, logs, monkeypatch):
    linked_out, out = tmp_path / "linked", tmp_path / "o"
    flags = _flags(data, out, 1, "--methods", "Ours", "Random")
    assert train_infl_eval.main(_flags(data, linked_out, 1, "--methods", "Ours", "Random")) == 0
    _no_symlinks(monkeypatch)
    assert train_infl_eval.main(flags) == 0
    first = _results(out)
    assert first == _results(linked_out)  # the same bytes as on links
    for v in (out / "train", out / "influence" / "Ours", out / "score" / "Ours"):
        assert links.is_copy(v), v
    held = links.view_entry(out / "influence" / "Ours")
    assert (held / "influence_0.csv").read_bytes() == first["influence/Ours/influence_0.csv"]
    assert (links.view_entry(out / "train") / "seed_0" / "record.npz").is_file()

    assert train_infl_eval.main(flags + ["--lr", "0.02"]) == 0  # another setting: the first kept
    assert _results(out) != first and (held / "influence_0.csv").is_file()
    logs.clear()
    assert train_infl_eval.main(flags) == 0
    assert any("nothing to do" in m for m in logs.at(logging.INFO)) and _results(out) == first

    # a result that reached the copy but not its entry (the run was killed) is kept
    for f in store.seed_files(held, "influence", 0):
        f.unlink()
    logs.clear()
    assert train_infl_eval.main(flags) == 0
    assert any("nothing to do" in m for m in logs.at(logging.INFO))
    assert (held / "influence_0.csv").read_bytes() == first["influence/Ours/influence_0.csv"]
