"""Atomic writes (a failure leaves the old file and no temporary file) and pickle-free npz."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sgd_influence import fileio


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.csv"
    fileio.write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with fileio.atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("half a fi")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.csv"]


def test_failure_before_anything_was_written(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(TypeError):
        fileio.write_json(target, {"not json": object()})
    assert list(tmp_path.iterdir()) == []


def test_failing_dataframe_write_leaves_nothing(tmp_path, monkeypatch):
    df = pd.DataFrame({"a": [1, 2]})

    def broken(self, path, **kw):
        open(path, "w").write("a\n1\n")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(fileio.WriteError, match=r"x\.csv: cannot write \(disk full\)"):
        fileio.write_csv(tmp_path / "x.csv", df)
    assert list(tmp_path.iterdir()) == []


def test_successful_writes_round_trip(tmp_path):
    fileio.write_json(tmp_path / "a" / "c.json", {"b": [1, 2], "a": None})
    assert fileio.read_json(tmp_path / "a" / "c.json") == {"a": None, "b": [1, 2]}
    fileio.write_csv(tmp_path / "t.csv", pd.DataFrame({"x:image": ["i.png"], "y:label": [3]}))
    assert (tmp_path / "t.csv").read_text().splitlines() == ["x:image,y:label", "i.png,3"]
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(7)}
    fileio.save_npz(tmp_path / "s.npz", **arrays)
    back = fileio.load_npz(tmp_path / "s.npz")
    assert back.keys() == arrays.keys()
    np.testing.assert_array_equal(back["w"], arrays["w"])
    assert back["w"].dtype == np.float32 and int(back["n"]) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "s.npz", "t.csv"]


def test_npz_with_a_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(2), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        fileio.load_npz(path)
