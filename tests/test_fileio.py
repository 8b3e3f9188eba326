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
    assert sorted(p.name for p in target.parent.iterdir()) == [".result.csv.sha256", "result.csv"]
    assert fileio.verify(target) is None  # the old file with its own checksum


def test_a_finished_file_is_reused_only_with_the_bytes_it_was_written_with(tmp_path):
    target = tmp_path / "scores.csv"
    fileio.write_text(target, "a,b\n1,2\n")
    assert fileio.verify(target) is None
    target.write_text("a,b\n1,3\n")  # same size, one digit changed
    assert "sha256 differs" in fileio.verify(target)
    fileio.write_text(target, "a,b\n1,3\n")  # written again: verified again
    assert fileio.verify(target) is None
    # a file without its checksum is not known to be finished: never reused, nothing recorded
    fileio.checksum_path(target).unlink()
    assert "checksum .scores.csv.sha256 is missing" in fileio.verify(target)
    assert not fileio.checksum_path(target).exists()


def test_the_row_writer_records_the_checksum_of_what_it_wrote(tmp_path):
    path = tmp_path / "steps.npy"
    with fileio.NpyRowWriter(path, 3, 4) as w:
        for i in range(3):
            w.write(np.full(4, i, np.float32))
    assert fileio.verify(path) is None
    arr = np.load(path)
    arr[1, 2] = 7.0
    np.save(path, arr)
    assert "sha256 differs" in fileio.verify(path)


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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".sha256")) == ["a", "s.npz", "t.csv"]
    assert not [p for p in tmp_path.rglob(".*") if ".tmp" in p.name]  # no temporary left


def test_npz_with_a_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(2), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        fileio.load_npz(path)
