"""Every output path lives under the output folder, with the names the README documents."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sgd_influence import paths

# Arguments for each path function; a function added to paths.py without an entry here fails
# test_every_path_function_is_covered.
ARGS = {
    "run_config": (), "phase_root": ("score",), "train_dir": (3,), "train_identity": (),
    "record": (3,), "epoch_snapshot": (3, 7), "final_model": (3,), "step_cache": (3, 19),
    "history": (3,), "learned": (3,), "label_noise": (3,), "influence": ("Ours", 3),
    "influence_stats": ("Hara", 3), "influence_mean": ("Ours",), "score": ("Hara", 40, 3),
    "floor_score": (4, 1, 3), "summary": (), "storage_table": (),
    "detection": (), "paired_tests": (), "figure": (),
    "influence_dir": ("Hara",), "method_identity": ("Ours",), "score_dir": ("Random",),
    "score_method_identity": ("noise_floor",),
}

EXPECTED = {
    "run_config": "config.json",
    "phase_root": "score",
    "train_dir": "train/seed_3",
    "train_identity": "train/config.json",
    "record": "train/seed_3/record.npz",
    "epoch_snapshot": "train/seed_3/snapshots/epoch_007.npz",
    "final_model": "train/seed_3/final.h5",
    "step_cache": "train/seed_3/snapshots/steps_from_epoch_019.npy",
    "history": "train/seed_3/history.csv",
    "learned": "train/seed_3/learned.json",
    "label_noise": "train/seed_3/label_noise.csv",
    "influence": "influence/Ours/influence_3.csv",
    "influence_stats": "influence/Hara/influence_3.json",
    "influence_mean": "influence/Ours/influence_mean.csv",
    "score": "score/Hara/score_delete_worst_40_seed_3.csv",
    "floor_score": "score/noise_floor/score_draw_1_delete_random_4_seed_3.csv",
    "summary": "summary/summary.csv",
    "storage_table": "summary/storage.csv",
    "detection": "summary/detection.csv",
    "paired_tests": "summary/paired_tests.csv",
    "figure": "fig/result.png",
    "influence_dir": "influence/Hara",
    "method_identity": "influence/Ours/config.json",
    "score_dir": "score/Random",
    "score_method_identity": "score/noise_floor/config.json",
}


def _path_functions():
    return {name: f for name, f in inspect.getmembers(paths, inspect.isfunction)
            if f.__module__ == paths.__name__ and inspect.signature(f).parameters
            and next(iter(inspect.signature(f).parameters)) == "out"}


def test_every_path_function_is_covered():
    assert set(_path_functions()) == set(ARGS)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_pattern_lies_under_the_output_folder(tmp_path, name):
    out = tmp_path / "run"
    got = _path_functions()[name](out, *ARGS[name])
    assert isinstance(got, Path)
    assert got.relative_to(out).as_posix() == EXPECTED[name]
    assert paths.run_config(str(out)) == out / "config.json"  # a str folder works the same


def test_globs_match_their_files_only(tmp_path):
    snap = paths.epoch_snapshot(tmp_path, 0, 12).relative_to(paths.train_dir(tmp_path, 0))
    assert snap.match(paths.epoch_snapshot_glob())
    cache = paths.step_cache(tmp_path, 0, 12).relative_to(paths.train_dir(tmp_path, 0))
    assert not cache.match(paths.epoch_snapshot_glob())
    hit = paths.score(tmp_path, "Random", 0, 1).relative_to(tmp_path)
    assert hit.match(paths.score_glob())
    floor = paths.floor_score(tmp_path, 2, 0, 1).relative_to(tmp_path)
    assert floor.match(paths.floor_glob()) and not hit.match(paths.floor_glob())
    infl = paths.influence(tmp_path, "Random", 1)
    assert infl.relative_to(tmp_path).match(paths.influence_glob())
    assert paths.parse_influence(infl) == ("Random", 1)
    assert paths.parse_influence(paths.influence_stats(tmp_path, "Ours", 1)) is None
    assert paths.seed_of_train_file(paths.record(tmp_path, 12)) == 12
    ident = paths.score_method_identity(tmp_path, paths.variant("Random", "last2")).relative_to(tmp_path)
    assert ident.match(paths.score_identity_glob()) and not hit.match(paths.score_identity_glob())
    assert paths.split_variant(ident.parent.name) == ("Random", "last2")
    for other in (infl.relative_to(tmp_path), paths.method_identity(tmp_path, "Random").relative_to(tmp_path),
                  floor):
        assert not other.match(paths.score_glob())


def test_named_figure_and_unknown_phase(tmp_path):
    assert paths.figure(tmp_path, "detection") == tmp_path / "fig" / "detection.png"
    with pytest.raises(ValueError, match="phase folder"):
        paths.phase_root(tmp_path, "weights")
