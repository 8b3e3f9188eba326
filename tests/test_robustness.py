"""Nothing silently wrong: each case ends in correct work or in one line naming the file or
flag, with a non-zero exit and the finished files unchanged.

One small CSV data set (BMP images, so two images of one size have files of one size)
and one finished run of the whole pipeline are shared; each test works on copies.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import train_infl_eval
from sgd_influence import cli, fileio, paths, runlock
from sgd_influence import config as C
from sgd_influence.data import read_csv_split

ROOT = Path(__file__).resolve().parents[1]
N = {"train": 40, "val": 12, "test": 12}
CLASSES, SIDE = 4, 8


def _write_split(folder: Path, name: str, n: int, rng, labels=None) -> Path:
    (folder / name).mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, CLASSES, n) if labels is None else np.asarray(labels)
    lines = ["x:image,y:label"]
    for i, y in enumerate(labels):
        img = rng.random((SIDE, SIDE)) * 90
        img[2 * (int(y) % 4) : 2 * (int(y) % 4) + 2, :] += 140
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i:03d}.bmp")
        lines.append(f"{name}/{i:03d}.bmp,{int(y)}")
    csv = folder / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def _make_data(folder: Path, seed: int = 3, train_labels=None) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    return {k: _write_split(folder, k, n, rng, train_labels if k == "train" else None)
            for k, n in N.items()}


def _argv(data, out, *extra) -> list[str]:
    return ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
            "--test-csv", str(data["test"]), "--model", "logreg", "--lr", "0.005", "-e", "2",
            "--batch-size", "8", "-nt", "1", "-r", "0", "3", "--methods", "Hara", "Ours", "Random",
            "--jobs", "1", *extra]


def _run(argv) -> int:
    try:
        return train_infl_eval.main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _files(out: Path) -> dict[str, bytes]:
    """Every finished file (temporary and lock files start with a dot)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(Path(out).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _results(out: Path) -> dict[str, bytes]:
    """The finished files but the run's config.json (a rerun saves its -o and flags there)."""
    return {k: v for k, v in _files(out).items() if k != "config.json"}


def _tmp_files(out: Path) -> list[Path]:
    return [p for p in Path(out).rglob(".*") if p.is_file() and p.name != runlock.LOCK_NAME
            and not p.name.endswith(".sha256")]  # checksums of finished files are not temporary


def _one_error(logs, *words) -> str:
    errs = logs.at(logging.ERROR)
    assert len(errs) == 1, errs
    assert "\n" not in errs[0]
    for w in words:
        assert w in errs[0], errs[0]
    return errs[0]


@pytest.fixture(scope="module", autouse=True)
def no_figures():
    """The figures (drawn by every run, ~10 s here; tested in test_pipeline and
    test_detection) are left out of these runs."""
    from sgd_influence import figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "plot_result", lambda *a, **k: None)
        mp.setattr(figures, "worst_samples_figure", lambda *a, **k: None)
        yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The data set and one finished run (Hara, Ours, Random; n = 0, 3)."""
    root = tmp_path_factory.mktemp("finished")
    data = _make_data(root / "data")
    out = root / "out"
    assert _run(_argv(data, out)) == 0
    return data, out


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run's output folder (the data is shared)."""
    data, out = finished
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return data, tmp_path / "out"


@pytest.fixture
def run_own_data(finished, tmp_path):
    """A private copy of the finished run and of its data set."""
    data, out = finished
    shutil.copytree(data["train"].parent, tmp_path / "data")
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return {k: tmp_path / "data" / p.name for k, p in data.items()}, tmp_path / "out"


# --------------------------------------------------------------- identity by content
def test_edited_labels_are_another_data_set(run_own_data, logs, monkeypatch):
    data, out = run_own_data
    # the copied data set is this run's data at another place: its images are named anew
    assert _run(_argv(data, out)) == 0
    assert pd.read_csv(paths.influence(out, "Ours", 0))["x:image"].str.startswith(
        str(data["train"].parent)).all()
    before = _files(out)
    logs.clear()
    # the same data under another spelling of its path, from another folder: reused
    monkeypatch.chdir(data["train"].parent)
    rel = {k: f"./{p.name}" for k, p in data.items()}  # ./train.csv, not the absolute path
    assert _run(_argv(rel, out)) == 0
    assert any("nothing to do" in m for m in logs.at(logging.INFO))
    saved = C.Config.from_dict(fileio.read_json(paths.run_config(out)))
    assert Path(saved.train_csv).is_absolute()
    # a phase alone, started elsewhere, finds the data through the saved absolute paths
    monkeypatch.chdir(out.parent)  # where ./train.csv does not exist

    assert cli.eval_main(["-o", str(out), "-r", "0", "3"]) == 0
    after = _files(out)
    after.pop("config.json"), before.pop("config.json")  # the data's paths as given here
    assert after == before
    before = _files(out)
    # one label edited, same command: refused, nothing changed
    text = data["train"].read_text().splitlines()
    path, label = text[1].split(",")
    text[1] = f"{path},{(int(label) + 1) % CLASSES}"
    data["train"].write_text("\n".join(text) + "\n")
    logs.clear()
    assert _run(_argv(data, out)) == 0
    _another_data_set(out, before, logs)


def test_swapped_images_of_one_size_and_time_are_new_data(run_own_data, logs):
    data, out = run_own_data
    before = _files(out)
    a, b = data["train"].parent / "train" / "000.bmp", data["train"].parent / "train" / "001.bmp"
    pix_a, pix_b = read_csv_split(data["train"]).images[:2]
    assert a.stat().st_size == b.stat().st_size and not np.array_equal(pix_a, pix_b)
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    bytes_a, bytes_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(bytes_b)
    b.write_bytes(bytes_a)
    for p, t in zip((a, b), times):
        os.utime(p, ns=t)
    got = read_csv_split(data["train"]).images  # the decode cache must not serve old pixels
    np.testing.assert_array_equal(got[0], pix_b)
    np.testing.assert_array_equal(got[1], pix_a)
    logs.clear()
    assert _run(_argv(data, out)) == 0
    _another_data_set(out, before, logs)


def _another_data_set(out: Path, before: dict, logs) -> None:
    """The run trained on data of other content: its own entries, the earlier ones kept."""
    from sgd_influence import store

    assert any(m.startswith("done: train seed 0") for m in logs.at(logging.INFO))
    after = _files(out)
    kept = {k: v for k, v in before.items() if k.startswith("store/")}
    assert {k: after.get(k) for k in kept} == kept
    digests = [e.identity["data_digest"] for e in store.entries(out, "train")]
    assert len(digests) == 2 and digests[0] != digests[1]


# --------------------------------------------------------------- one writer per folder
HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from sgd_influence import runlock
    with runlock.hold(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(out: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT)), str(out), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_overwrite_while_another_run_works_is_refused(run, logs):
    data, out = run
    before = _files(out)
    holder = _hold(out, 30)
    try:
        assert _run(_argv(data, out, "--lr", "0.01", "--overwrite")) == 2
    finally:
        holder.kill()
        holder.wait()
    _one_error(logs, f"process {holder.pid} on host", "--wait", str(out))
    assert _files(out) == before


def test_second_run_on_one_folder_stops_or_waits(run, logs):
    data, out = run
    before = _results(out)
    holder = _hold(out, 2.0)
    try:
        assert _run(_argv(data, out)) == 2
        _one_error(logs, f"in use by process {holder.pid}")
        logs.clear()
        t0 = time.monotonic()
        assert _run(_argv(data, out, "--wait")) == 0  # waits, then finds every file done
        assert time.monotonic() - t0 > 0.5
    finally:
        holder.kill()
        holder.wait()
    assert any("waiting" in m for m in logs.at(logging.INFO))
    assert any("nothing to do" in m for m in logs.at(logging.INFO))
    assert _results(out) == before


# --------------------------------------------------------------- damaged results
def test_influence_file_cut_at_a_line_boundary_is_recomputed(run, logs):
    data, out = run
    before = _results(out)
    target = paths.influence(out, "Ours", 0)
    lines = target.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[: len(lines) // 2]))

    # the evaluation alone names the file and says how to recompute it
    assert cli.eval_main(["-o", str(out), "-r", "0", "3"]) == 2
    _one_error(logs, str(target), "rows, expected", "influence phase")
    logs.clear()
    assert _run(_argv(data, out)) == 0
    assert any(str(target) in m and "damaged" in m for m in logs.at(logging.WARNING))
    assert _results(out) == before  # recomputed to the same bytes; nothing else changed


def test_influence_file_cut_mid_line_is_recomputed_with_overwrite(run, logs):
    data, out = run
    before = _results(out)
    target = paths.influence(out, "Hara", 0)
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 2 + 7])
    assert _run(_argv(data, out, "--overwrite")) == 0  # computed again, not read
    assert any("--overwrite" in m and "removed" in m for m in logs.at(logging.INFO))
    assert _results(out) == before


@pytest.mark.parametrize("which", ["record", "snapshot", "window_snapshot"])
def test_truncated_training_files_named_then_recomputed(run, logs, which):

    data, out = run
    before = _results(out)
    # the final epoch's snapshot (Ours reads it), the window's first (Hara replays from it)
    damaged = {"record": paths.record(out, 0), "snapshot": paths.epoch_snapshot(out, 0, 2),
               "window_snapshot": paths.epoch_snapshot(out, 0, 1)}[which]
    damaged.write_bytes(damaged.read_bytes()[:-100])
    method = "Hara" if which == "window_snapshot" else "Ours"
    paths.influence(out, method, 0).unlink()
    # the influence phase alone: one line naming the file
    phase = ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
             "--test-csv", str(data["test"]), "--model", "logreg", "--lr", "0.005", "-e", "2",
             "--batch-size", "8", "--methods", method]
    assert cli.infl_main(phase) == 2
    _one_error(logs, str(damaged), "damaged or truncated")
    logs.clear()
    # the whole command: named, retrained, identical files
    assert _run(_argv(data, out)) == 0
    assert any(str(damaged) in m and "damaged" in m for m in logs.at(logging.WARNING))
    assert _results(out) == before


def test_influence_phase_with_a_step_cache_the_run_lacks(run, logs):
    """--hara-cache on the influence phase alone: the every-step cache the training run
    lacks is named (with what writes it), and a damaged one is named as damaged; once
    written by the training phase (by replay, not by training again) it is used."""
    data, out = run
    phase = ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
             "--test-csv", str(data["test"]), "--model", "logreg", "--lr", "0.005", "-e", "2",
             "--batch-size", "8", "--methods", "Hara", "--hara-cache", "--overwrite"]
    cache = paths.step_cache(out, 0, 1)
    assert cli.infl_main(phase) == 2
    _one_error(logs, str(cache), "not found", "--hara-cache")
    snapshots = {p: p.read_bytes() for p in paths.train_dir(out, 0).rglob("epoch_*.npz")}
    assert cli.train_main(phase[:-1]) == 0
    assert any("by replay" in m for m in logs.at(logging.INFO))
    assert {p: p.read_bytes() for p in snapshots} == snapshots
    logs.clear()
    assert cli.infl_main(phase) == 0
    assert logs.at(logging.ERROR) == []
    cache.write_bytes(cache.read_bytes()[:-8])
    assert cli.infl_main(phase) == 2
    _one_error(logs, str(cache), "damaged or truncated")
    logs.clear()
    assert cli.train_main(phase[:-1]) == 0  # named, and written again by replay
    assert any(str(cache) in m and "by replay" in m for m in logs.at(logging.WARNING))
    assert cli.infl_main(phase) == 0


# --------------------------------------------------------------- a full disk
def test_full_disk_is_one_line_and_leaves_no_temporary_file(run, logs, monkeypatch):
    data, out = run
    before = _results(out)
    # killed runs left temporary files: they go before anything new is written
    stale = paths.train_dir(out, 1) / "snapshots" / ".final.npz.tmp99999999"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 1000)
    seen = []
    real_write_json = fileio.write_json

    def write_json(path, obj):
        seen.append((Path(path).name, stale.exists()))
        real_write_json(path, obj)

    real_os_write = os.write

    def no_space_for_cache(fd, data):  # the every-step cache (--hara-cache) meets a full disk
        if "steps_from_epoch" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_os_write(fd, data)

    monkeypatch.setattr(fileio, "write_json", write_json)
    monkeypatch.setattr(os, "write", no_space_for_cache)
    # seed 0 was trained without the cache: it is written by replay first, and fails
    assert _run(_argv(data, out, "-nt", "2", "--hara-cache")) == 1
    err = _one_error(logs, str(paths.step_cache(out, 0, 1)), "No space left on device")
    assert "free some space" in err
    assert seen and seen[0] == ("config.json", False)
    assert _tmp_files(out) == []
    # a full disk in an ordinary write (the snapshot of seed 1)
    monkeypatch.undo()
    real_savez = np.savez

    def savez_half(fh, **arrays):
        real_savez(fh, **arrays)
        fh.truncate(fh.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez_half)
    logs.clear()
    assert _run(_argv(data, out, "-nt", "2")) == 1
    _one_error(logs, str(paths.epoch_snapshot(out, 1, 0)), "No space left on device")
    assert _tmp_files(out) == []
    after = _results(out)
    assert {k: v for k, v in after.items() if k in before} == before


# --------------------------------------------------------------- divergence
@pytest.mark.parametrize("model", ["logreg", "cifarnet"])
def test_divergence_stops_training_with_one_line(finished, tmp_path, logs, model):
    data, _ = finished
    out = tmp_path / "out"
    assert _run(_argv(data, out, "--lr", "1e9", "--model", model, "--width", "2",
                      "--methods", "Ours")) == 2
    _one_error(logs, "--lr", "diverged")
    assert not (out / "influence").exists() or not any((out / "influence").rglob("*.csv"))
    assert not paths.record(out, 0).exists()


# --------------------------------------------------------------- a phase alone
def test_phase_alone_refuses_other_settings_than_the_training_run(run, logs):

    data, out = run
    shutil.rmtree(out / "influence")
    before = _files(out)
    phase = ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
             "--test-csv", str(data["test"]), "--model", "logreg", "-e", "2", "--batch-size", "8",
             "--methods", "Ours"]
    assert cli.infl_main([*phase, "--lr", "0.01"]) == 2
    _one_error(logs, "--lr 0.005 (given: 0.01)", str(paths.record(out, 0)), "run the training phase first")
    assert _files(out) == before
    assert cli.infl_main([*phase, "--lr", "0.005"]) == 0
    assert paths.influence(out, "Ours", 0).exists()


# --------------------------------------------------------------- bad -o, labels, flags
def _ro_place(tmp_path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores modes: a place no one can write
        return Path("/sys/sgd_influence_out")
    return ro / "out"


@pytest.mark.parametrize("case", ["file", "file/sub", "read-only", "empty"])
def test_bad_output_folder_one_line(finished, tmp_path, logs, case):
    data, _ = finished
    (tmp_path / "file").write_text("keep me\n")
    out = {"file": str(tmp_path / "file"), "file/sub": str(tmp_path / "file" / "sub"),
           "read-only": str(_ro_place(tmp_path)), "empty": ""}[case]
    cwd_before = sorted(os.listdir("."))
    assert _run(_argv(data, out)) == 2
    _one_error(logs, "-o/--output")
    assert (tmp_path / "file").read_text() == "keep me\n"
    assert sorted(os.listdir(".")) == cwd_before  # -o "" wrote nothing here


def test_absurd_label_names_the_csv_row(finished, tmp_path, logs):
    data, _ = finished
    shutil.copytree(data["train"].parent, tmp_path / "data")
    bad = tmp_path / "data" / "train.csv"
    lines = bad.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",100000000"
    bad.write_text("\n".join(lines) + "\n")
    assert _run(_argv({**data, "train": bad}, tmp_path / "out")) == 2
    _one_error(logs, f"{bad} line 6", "label '100000000' is too large")


def _huge_png(path: Path, side: int = 20000) -> None:
    """A real side x side PNG (1-bit grayscale, all black): 400 million pixels, far past what
    Pillow decodes (a decompression bomb to it), in about 60 kB."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the row's bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_huge_image_names_the_csv_line_and_the_image_before_any_training(finished, tmp_path, logs):
    data, _ = finished
    shutil.copytree(data["train"].parent, tmp_path / "data")
    train = tmp_path / "data" / "train.csv"
    _huge_png(tmp_path / "data" / "train" / "huge.png")
    lines = train.read_text().splitlines()
    lines[7] = "train/huge.png," + lines[7].split(",")[1]
    train.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert _run(_argv({**data, "train": train}, out)) == 2
    _one_error(logs, f"{train} line 8", "'train/huge.png'", "20000x20000")
    assert not paths.record(out, 0).exists() and not any("start:" in m for m in logs.at(logging.INFO))
    with pytest.raises(Image.DecompressionBombError):  # Pillow's protection stays
        Image.open(tmp_path / "data" / "train" / "huge.png")
    with pytest.raises(ValueError, match=f"^{train} line 8: image 'train/huge.png' too large"):
        read_csv_split(train, digest="given")  # decoded without the check of the digest


def test_one_class_is_an_error_missing_classes_a_warning(tmp_path, logs):
    one = _make_data(tmp_path / "one", train_labels=[2] * N["train"])
    assert _run(_argv(one, tmp_path / "o1")) == 2
    _one_error(logs, str(one["train"]), "at least two classes")
    logs.clear()
    gaps = _make_data(tmp_path / "gaps", train_labels=[0, 5] * (N["train"] // 2))
    for k in ("val", "test"):  # validation and test with the same two classes
        text = gaps[k].read_text().splitlines()
        gaps[k].write_text("\n".join(text[:1] + [f"{ln.split(',')[0]},{5 * (i % 2)}"
                                                 for i, ln in enumerate(text[1:])]) + "\n")
    assert _run(_argv(gaps, tmp_path / "o2", "-e", "1", "--methods", "Ours", "-r", "0")) == 0
    warned = [m for m in logs.at(logging.WARNING) if "no training row has label" in m]
    assert len(warned) == 1 and "1, 2, 3, 4" in warned[0] and str(gaps["train"]) in warned[0]


@pytest.mark.parametrize("flag", ["--val-csv", "--test-csv"])
def test_csv_flags_without_train_csv(finished, tmp_path, logs, flag):
    data, _ = finished
    key = flag[2:].split("-")[0]
    assert _run(["-o", str(tmp_path / "o"), flag, str(data[key]), "--model", "logreg"]) == 2
    _one_error(logs, flag, "--train-csv")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------- nothing silently stale
def test_a_moved_csv_data_set_names_its_images_where_they_are_now(run_own_data, tmp_path, logs):
    data, out = run_own_data
    before = {m: pd.read_csv(paths.influence(out, m, 0)) for m in ("Hara", "Ours", "Random")}
    moved = tmp_path / "moved"
    shutil.move(str(data["train"].parent), moved)
    data = {k: moved / p.name for k, p in data.items()}
    assert _run(_argv(data, out)) == 0
    for m, old in before.items():
        new = pd.read_csv(paths.influence(out, m, 0))
        assert new["x:image"].map(lambda f: Path(f).is_file() and str(moved) in f).all(), m
        pd.testing.assert_frame_equal(new.drop(columns="x:image"), old.drop(columns="x:image"))


def test_lost_identity_files_never_mix_results_of_other_settings(run, logs):
    """An entry's saved identity is lost: another --lr is still other entries (the key is
    the identity), and the first settings find their results again."""
    data, out = run
    before = _results(out)
    hara, ours = paths.influence(out, "Hara", 0).read_bytes(), paths.score(out, "Ours", 3, 0).read_bytes()
    for f in out.rglob("config.json"):
        f.unlink()
    assert _run(_argv(data, out, "--lr", "0.02")) == 0
    assert paths.influence(out, "Hara", 0).read_bytes() != hara
    assert paths.score(out, "Ours", 3, 0).read_bytes() != ours
    assert fileio.read_json(paths.train_identity(out))["lr"] == 0.02
    assert _run(_argv(data, out)) == 0
    assert paths.influence(out, "Hara", 0).read_bytes() == hara
    assert paths.score(out, "Ours", 3, 0).read_bytes() == ours
    assert {k: v for k, v in _results(out).items() if k in before} == before


@pytest.mark.parametrize("what", ["final.h5", "history.csv", "influence.csv", "score.csv"])
def test_changed_bytes_of_the_same_size_are_found_and_recomputed(run, logs, what):
    data, out = run
    before = _results(out)
    target = {"final.h5": paths.final_model(out, 0), "history.csv": paths.history(out, 0),
              "influence.csv": paths.influence(out, "Hara", 0),
              "score.csv": paths.score(out, "Ours", 3, 0)}[what]
    raw = bytearray(target.read_bytes())
    if what == "final.h5":
        raw[-9] ^= 0x01  # one bit of the last array's data
    else:
        i = max(k for k, c in enumerate(raw) if chr(c).isdigit() and chr(raw[k - 1]).isdigit())
        raw[i] = ord("1") if raw[i] != ord("1") else ord("2")  # one digit of a number
    target.write_bytes(bytes(raw))
    assert _run(_argv(data, out)) == 0
    assert any(str(target) in m and "damaged" in m for m in logs.at(logging.WARNING)), logs.at(logging.WARNING)
    assert _results(out) == before  # recomputed to the same bytes


@pytest.mark.parametrize("what", ["score", "influence", "final.h5"])
def test_a_finished_file_without_its_checksum_is_recomputed(run, logs, what):
    """The checksum is written before a file is renamed into place: a file without one
    is not known to be finished, and an edit made with it gone is not adopted."""
    data, out = run
    before = _results(out)
    target = {"score": paths.score(out, "Ours", 3, 0), "influence": paths.influence(out, "Hara", 0),
              "final.h5": paths.final_model(out, 0)}[what]
    fileio.checksum_path(target).unlink()
    if what == "score":
        df = pd.read_csv(target)
        df["val_loss"] = 9.999
        df.to_csv(target, index=False)
    assert _run(_argv(data, out)) == 0
    assert any(str(target) in m and "checksum" in m for m in logs.at(logging.WARNING)), logs.at(logging.WARNING)
    assert _results(out) == before  # recomputed to the same bytes
    assert fileio.checksum_path(target).exists()
    assert 9.999 not in pd.read_csv(paths.summary(out))["val_loss"].tolist()


@pytest.mark.parametrize("which", ["run", "train", "facts"])
def test_damaged_or_lost_json_is_computed_again(run, logs, which):
    data, out = run
    before = _results(out)
    target = {"run": paths.run_config(out), "train": paths.train_identity(out),
              "facts": paths.influence_stats(out, "Hara", 0)}[which]
    target.write_text('{"broken')
    assert _run(_argv(data, out)) == 0
    assert _results(out) == before
    paths.influence_stats(out, "Hara", 0).unlink()
    assert _run(_argv(data, out)) == 0
    assert _results(out) == before  # the facts file again, and u_growth back in the summary


def test_tilde_after_equals_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    p = cli.phase_parser("x", None, "pipeline")
    cfg = cli.phase_config(p.parse_args(["--output=~/runs/a", "--data-dir=~/data"]))
    assert cfg.output == str(tmp_path / "runs" / "a") and cfg.data_dir == str(tmp_path / "data")


def test_analysis_and_data_export_do_not_write_into_a_folder_another_run_holds(run, logs, tmp_path):
    _data, out = run
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from sgd_influence import runlock
        with runlock.hold({str(out)!r}):
            print("held", flush=True)
            time.sleep(30)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        summary = paths.summary(out).read_bytes()
        assert cli.analyze_main(["-o", str(out)]) == 2
        assert paths.summary(out).read_bytes() == summary
    finally:
        holder.kill()
        holder.wait()
    export = subprocess.run([sys.executable, "-m", "sgd_influence.data", "mnist5k", "--export-csv",
                             str(out)], cwd=ROOT, capture_output=True, text=True)
    assert export.returncode == 2 and "--export-csv" in export.stderr and "run's output folder" in export.stderr
    assert not (out / "train_0.csv").exists()


def test_scores_do_not_depend_on_the_process_blas_threads(tmp_path):
    """A dot product over more than ~20k values sums in another order with 2 BLAS threads
    than with 1 (--jobs 1 computes in this process, workers are single-threaded)."""
    from synth import make_dataset
    from threadpoolctl import threadpool_limits

    from sgd_influence.engine import prepare
    from sgd_influence.infl import compute_scores

    data = prepare(make_dataset(48, 16, 8, seed=1, num_classes=4), 0)
    cfg = C.Config(output=str(tmp_path), model="mlp", n_epochs=1, batch_size=16, lr=0.05,
                   methods=("Hara", "Ours"))
    from sgd_influence.train import run_training

    run_training(cfg, 0, data)
    got = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            facts: dict = {}
            scores = compute_scores(cfg, 0, "Ours", data, facts=facts)
            got[threads] = (scores.tobytes(), repr(facts["u_growth"]))
    assert got[1] == got[2]


def test_messages_name_the_flag_and_advise_what_works(run, logs):
    data, out = run
    # every n not smaller than the training set: one line naming -r, not "run eval first"
    assert _run(_argv(data, out, "-r", "500", "--noise-floor-k", "1", "500")) == 2
    err = _one_error(logs, "-r/--remove_n_list", "40 samples", "nothing to retrain")
    assert "evaluation phase" not in err
    assert any("--noise-floor-k" in m and "500" in m for m in logs.at(logging.WARNING))
    logs.clear()
    # the evaluation alone with other influence settings: no advice of an --overwrite that
    # would refuse the same way
    assert cli.eval_main(["-o", str(out), "-r", "0", "3", "--hvp-scaling", "reference"]) == 2
    err = _one_error(logs, "--hvp-scaling", "python -m sgd_influence.infl")
    assert "--overwrite" not in err
    logs.clear()
    assert _run(_argv(data, out.parent / "fresh", "--jobs", "2", "--scheduler", "notaurl::")) == 2
    _one_error(logs, "--scheduler", "notaurl::")


def test_the_first_command_offline_is_one_error_line(tmp_path):
    """`train_infl_eval.py -o out -ds mnist -nt 1` without network: the download fails once,
    in the calling process, before any task: one ERROR line, no Dask block, exit 2."""
    env = {**os.environ, "SGD_INFLUENCE_DATA": str(tmp_path / "data"),
           # every request goes to a closed local port: offline, and nothing leaves the machine
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, str(ROOT / "train_infl_eval.py"), "-o", str(tmp_path / "out"),
                          "-ds", "mnist", "-nt", "1"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line or "[ERROR]" in line]
    assert len(errors) == 1 and "cannot download" in errors[0] and "put the file by hand" in errors[0]
    for noise in ("Traceback", "Compute Failed", "distributed.", "Key:"):
        assert noise not in res.stderr, (noise, res.stderr[-3000:])


FAILS_IN_TRAINING = '''
import nnabla.functions as F
import nnabla.parametric_functions as PF


def net(x, num_classes, norm):
    if norm.mode == "train":
        raise RuntimeError("this network breaks while training")
    return PF.affine(F.relu(norm(PF.convolution(x, 2, (3, 3), pad=(1, 1)), "bn")), num_classes)
'''


def test_a_task_failing_in_a_dask_worker_is_one_line_without_the_workers_report(finished, tmp_path):
    data, _ = finished
    net = tmp_path / "net.py"
    net.write_text(FAILS_IN_TRAINING)
    argv = [sys.executable, str(ROOT / "train_infl_eval.py"), *_argv(data, tmp_path / "out")]
    argv[argv.index("--jobs") + 1] = "2"
    argv[argv.index("--model") + 1] = f"{net}:net"
    res = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line or "[ERROR]" in line]
    assert len(errors) == 1 and "breaks while training" in errors[0], res.stderr[-3000:]
    for noise in ("Traceback", "Compute Failed", "Key:"):
        assert noise not in res.stderr, (noise, res.stderr[-3000:])


def test_an_unwritable_data_dir_is_named_before_any_training(tmp_path, logs):
    ro = _ro_place(tmp_path)  # a place no one can write
    out = tmp_path / "out"
    assert _run(["-o", str(out), "--preset", "tiny", "--data-dir", str(ro), "--jobs", "1"]) == 2
    _one_error(logs, "--data-dir", str(ro))
    assert not paths.record(out, 0).exists()


@pytest.mark.parametrize("model", ["nosuchmod:net", "nosuchpkg.mod:net"])
def test_a_network_module_that_cannot_be_imported_is_one_line(tmp_path, logs, model):
    out = tmp_path / "out"
    assert _run(["-o", str(out), "--preset", "tiny", "--model", model, "--jobs", "1"]) == 2
    _one_error(logs, "--model", repr(model.split(":")[0]))
    assert not out.exists() or not any(f.is_file() for f in out.rglob("*") if f.name != runlock.LOCK_NAME)


def test_ctrl_c_in_the_influence_walk_in_this_process_is_exit_130(tmp_path):
    """Ctrl-C that lands in nnabla's C++ code comes out of it as a SystemError whose context
    is the KeyboardInterrupt: it is an interruption all the same (--jobs 1: in this process)."""
    for delay in (0.15, 0.3, 0.45):  # the walk takes about two seconds: each lands in it
        out = tmp_path / f"out{delay}"  # trained in the same process, as a first run is
        # the double backward and batches of 4 keep the walk about 1.8 s long on an idle
        # machine (at the preset's batch 32 it took 0.4 s there, so a signal came after it
        # ended; --hvp auto takes logreg's by differences, shorter still)
        argv = [sys.executable, str(ROOT / "train_infl_eval.py"), "--preset", "tiny", "-e", "1",
                "-o", str(out), "--methods", "Hara", "--jobs", "1", "--hvp", "exact", "--batch-size", "4"]
        proc = subprocess.Popen(argv, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        text = ""
        for line in proc.stderr:
            text += line
            if "start: influence Hara" in line:
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
                break
        text += proc.communicate(timeout=120)[1]
        errors = [ln for ln in text.splitlines() if " ERROR " in ln]
        assert proc.returncode == 130 and len(errors) == 1 and "interrupted" in errors[0], (delay, text[-3000:])
        assert "Traceback" not in text
        assert paths.final_model(out, 0).exists() and not paths.influence(out, "Hara", 0).exists()


CTRL_C_IN_A_CALLBACK = '''
import os, runpy, signal, sys

calls = 0


def hook(frame, event, arg):
    """Ctrl-C while nnabla's C++ code runs one of its backward functions written in Python."""
    global calls
    if event == "call" and frame.f_code.co_name == "forward_impl" and "backward_function" in frame.f_code.co_filename:
        calls += 1
        if calls == 50:
            os.kill(os.getpid(), signal.SIGINT)


sys.setprofile(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def test_ctrl_c_inside_an_nnabla_callback_is_exit_130(tmp_path):
    """The same, Ctrl-C landing where it turns into a SystemError every time: while nnabla's
    C++ code calls one of its backward functions written in Python (the walk's)."""
    (tmp_path / "ctrl_c.py").write_text(CTRL_C_IN_A_CALLBACK)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(tmp_path / "ctrl_c.py"), str(ROOT / "train_infl_eval.py"),
                          "--preset", "tiny", "-e", "1", "-o", str(out), "--methods", "Hara", "--jobs", "1",
                          "--hvp", "exact"],  # the double backward: its functions written in Python
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         # a terminal's Ctrl-C: SIGINT handled even when this suite runs as a
                         # background job, whose children inherit SIGINT ignored
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    errors = [ln for ln in res.stderr.splitlines() if " ERROR " in ln]
    assert res.returncode == 130 and len(errors) == 1 and "interrupted" in errors[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert paths.final_model(out, 0).exists() and not paths.influence(out, "Hara", 0).exists()


def test_a_log_file_gets_whole_log_lines_no_progress_bar_fragments(finished, tmp_path):
    """stderr to a file (`2> log.txt`, a batch job's log): the bars, which redraw their line
    with carriage returns, would leave fragments on the log's lines; off a terminal there
    are none."""
    data, _ = finished
    log = tmp_path / "log.txt"
    with open(log, "wb") as f:
        res = subprocess.run([sys.executable, str(ROOT / "train_infl_eval.py"),
                              *_argv(data, tmp_path / "out", "-e", "1", "--methods", "Ours")],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=f, timeout=300)
    text = log.read_bytes().decode()  # as written: carriage returns kept
    assert res.returncode == 0, text[-3000:]
    records = [ln for ln in text.split("\n") if re.search(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", ln)]
    assert any("start: train seed 0" in ln for ln in records) and any("done: retrain" in ln for ln in records)
    bar = re.compile(r"\d+%\||\[\d\d:\d\d<|(it|task|img)/s\]")
    assert [ln for ln in records if bar.search(ln)] == []
    assert "\r" not in text


def test_run_from_a_plain_script_without_a_main_guard_works_on_worker_processes(finished, tmp_path):
    """`sgd_influence.run(...)` at a script's top level, no `if __name__ == "__main__":`, a
    local Dask cluster: its spawned workers do not run the script again."""
    data, _ = finished
    out = tmp_path / "out"
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(f"""
        import sgd_influence

        out = sgd_influence.run(output={str(out)!r}, train_csv={str(data["train"])!r},
                                val_csv={str(data["val"])!r}, test_csv={str(data["test"])!r},
                                model="logreg", n_epochs=1, batch_size=8, n_trials=1,
                                remove_n_list=[0, 3], methods="Ours", noise_floor_draws=0, jobs=2)
        print("finished", out)
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and f"finished {out}" in res.stdout, res.stderr[-3000:]
    for noise in ("Traceback", "Nanny failed", "bootstrapping phase"):
        assert noise not in res.stderr, (noise, res.stderr[-3000:])
    assert paths.score(out, "Ours", 3, 0).exists()
