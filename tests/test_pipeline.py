"""End-to-end tests of train_infl_eval.py on a tiny CSV data set of PNG files:
file tree and contents, reuse, resume after kills, --jobs 2 == --jobs 1, bad flags."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import train_infl_eval
from sgd_influence import config as C
from sgd_influence import eval as ev
from sgd_influence import paths

ROOT = Path(__file__).resolve().parents[1]
REMOVE = ["0", "1", "2", "3", "5", "8", "13", "20", "30", "50", "500"]  # 500 >= training size
N_TRAIN, N_VAL, N_TEST, CLASSES, SIDE = 120, 40, 40, 4, 28


def _write_split(folder: Path, name: str, n: int, rng) -> Path:
    """PNGs of a bright band whose height tells the class, plus their NNC CSV."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, CLASSES, n)
    lines = ["x:image,y:label"]
    for i, y in enumerate(labels):
        img = rng.random((SIDE, SIDE)) * 90
        top = 3 + 6 * int(y)
        img[top : top + 4, :] += 140
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i:04d}.png")
        lines.append(f"{name}/{i:04d}.png,{int(y)}")
    csv = folder / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("csvdata")
    rng = np.random.default_rng(7)
    return {k: _write_split(folder, k, n, rng)
            for k, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST))}


def _args(csv_data, out, *extra) -> list[str]:
    return ["-o", str(out), "--train-csv", str(csv_data["train"]), "--val-csv", str(csv_data["val"]),
            "--test-csv", str(csv_data["test"]), "--model", "cifarnet", "--width", "2", "-e", "2",
            "--batch-size", "16", "--lr", "0.05", "-nt", "2", "-r", *REMOVE,
            "--noise-floor-k", "1", "3", "--noise-floor-draws", "1", *extra]


class _Records(logging.Handler):
    """Records of the package's loggers (the CLI replaces the root logger's handlers,
    so pytest's caplog does not see what a main() logs)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]

    def clear(self):
        self.records.clear()


@pytest.fixture
def logs():
    h = _Records()
    pkg = logging.getLogger("sgd_influence")
    pkg.addHandler(h)
    yield h
    pkg.removeHandler(h)


def _csvs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.csv"))
            if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def reference(csv_data, tmp_path_factory):
    """One uninterrupted --jobs 1 run (shared by the tests below)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    t0 = time.perf_counter()
    assert train_infl_eval.main(_args(csv_data, out, "--jobs", "1")) == 0
    return out, time.perf_counter() - t0


def test_end_to_end_file_tree_and_contents(reference, capsys):
    out, _ = reference
    methods = C.METHODS
    ns = [int(n) for n in REMOVE if int(n) < N_TRAIN]
    for seed in (0, 1):
        for f in ("record.npz", "history.csv", "config.json", "final.h5", "snapshots/epoch_000.npz",
                  "snapshots/epoch_001.npz", "snapshots/epoch_002.npz"):
            assert (paths.train_dir(out, seed) / f).exists(), f
        assert not list(paths.train_dir(out, seed).glob("**/*.npy"))  # nothing per step
        for m in methods:
            inf = pd.read_csv(paths.influence(out, m, seed))
            assert list(inf.columns) == ["x:image", "y:label", "influence", "datasource_index"]
            assert len(inf) == N_TRAIN
            assert np.isfinite(inf["influence"]).all()
            assert inf["influence"].is_monotonic_increasing
            assert sorted(inf["datasource_index"]) == list(range(N_TRAIN))
            assert inf["x:image"].map(lambda f: Path(f).is_absolute() and Path(f).is_file()).all()
            for n in ns:
                sc = pd.read_csv(paths.score(out, m, n, seed))
                assert list(sc.columns) == list(ev.SCORE_COLUMNS)
                assert len(sc) == 1 and sc["epoch"].tolist() == [2]  # the window: last epoch
                assert (sc["method"] == m).all() and (sc["n"] == n).all() and (sc["seed"] == seed).all()
                for c in ("val_accuracy", "test_accuracy"):
                    assert sc[c].between(0, 1).all()
                assert np.isfinite(sc[["val_loss", "test_loss"]].to_numpy()).all()
            assert not paths.score(out, m, 500, seed).exists()
    # No Removal is one retrain shared by every method
    base = [pd.read_csv(paths.score(out, m, 0, 0)).drop(columns="method") for m in methods]
    assert all(b.equals(base[0]) for b in base)
    # the window replayed without removal reproduces the trained model's validation result
    hist = pd.read_csv(paths.history(out, 0))
    assert base[0]["val_accuracy"].iloc[0] == pytest.approx(hist["val_acc"].iloc[-1], abs=1e-12)
    # removing different samples changes the result somewhere
    accs = {pd.read_csv(paths.score(out, m, 50, s))["val_loss"].iloc[0] for m in methods for s in (0, 1)}
    assert len(accs) > 1
    # the noise floor: retrains without k = 1 and 3 random samples, one draw each
    for seed in (0, 1):
        for k in (1, 3):
            fl = pd.read_csv(paths.floor_score(out, k, 0, seed))
            assert fl["epoch"].tolist() == [2] and (fl["n"] == k).all()
        assert not paths.floor_score(out, 1, 1, seed).exists()
    summary = pd.read_csv(paths.summary(out))
    n_groups = 1 + len(methods) * (len(ns) - 1)  # No Removal, then every method and n > 0
    removal = summary[summary["method"] != "Noise floor"]
    assert (removal["row"] == "trial").sum() == 2 * n_groups
    assert (summary["row"] == "mean").sum() == n_groups == (summary["row"] == "std").sum()
    assert set(summary.loc[summary["n_drops"] == 0, "method"]) == {"No Removal"}
    floor = summary[summary["method"] == "Noise floor"]
    assert (floor["row"] == "trial").sum() == 4 and (floor["row"] == "floor").sum() == 3
    assert summary.loc[summary["row"] != "floor", "test_accuracy"].between(0, 1).all()
    tests = pd.read_csv(paths.paired_tests(out))
    assert set(tests.loc[tests["baseline"] == "Random", "method"]) == {"Hara", "Ours"}
    assert paths.figure(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    storage = pd.read_csv(paths.storage_table(out))
    run = storage[storage["setting"] == "this run (seed 0)"]
    assert len(run) == 5 and (run["window_steps"] == N_TRAIN // 16 + 1).all()
    replay_row = run[run["row"].str.startswith("Hara by replay")].iloc[0]
    assert replay_row["file_bytes"] == sum(p.stat().st_size for p in
                                          paths.train_dir(out, 0).glob("snapshots/epoch_*.npz"))


def test_rerun_reuses_everything_and_warns_once(reference, csv_data, logs):
    out, _ = reference
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
              and p.parts[-2] not in ("summary", "fig") and p.name != ".lock"}
    assert train_infl_eval.main(_args(csv_data, out, "--jobs", "1")) == 0
    after = {p: p.stat().st_mtime_ns for p in before}
    changed = [str(p) for p in before if before[p] != after[p] and p.name != "config.json"]
    assert not changed
    warnings = [r for r in logs.records if r.levelno == logging.WARNING and "500" in r.getMessage()]
    assert len(warnings) == 1 and "training set (120 samples)" in warnings[0].getMessage()
    assert any("nothing to do" in r.getMessage() for r in logs.records)


@pytest.mark.slow
def test_jobs_2_gives_the_same_files_as_jobs_1(reference, csv_data, tmp_path):
    ref, _ = reference
    out = tmp_path / "out"
    assert train_infl_eval.main(_args(csv_data, out, "--jobs", "2")) == 0
    a, b = _csvs(ref), _csvs(out)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    a, b = (np.load(paths.epoch_snapshot(o, 1, 2)) for o in (ref, out))
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def _spawn(argv, log):
    return subprocess.Popen([sys.executable, str(ROOT / "train_infl_eval.py"), *argv], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc, condition, timeout=120.0) -> bool:
    """SIGKILL the run (workers included) once ``condition()`` holds; False if it ended first."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the run neither reached the kill point nor ended")


@pytest.mark.slow
def test_killed_runs_resume_to_identical_files(reference, csv_data, tmp_path):
    ref, _ = reference
    out = tmp_path / "out"
    argv = _args(csv_data, out, "--jobs", "2")
    kill_points = [
        ("training", lambda: paths.epoch_snapshot(out, 0, 0).exists()),
        ("influence", lambda: any((out / "influence").rglob("influence_*.csv"))),
        ("evaluation", lambda: len(list((out / "score").rglob("score_*.csv"))) >= 8),
    ]
    killed = []
    with open(tmp_path / "log.txt", "wb") as log:
        for name, cond in kill_points:
            if _kill_when(_spawn(argv, log), cond):
                killed.append(name)
    print("killed during", killed)
    assert "evaluation" in killed, (tmp_path / "log.txt").read_text()[-3000:]
    assert not paths.summary(out).exists()  # the last kill came before the end
    assert train_infl_eval.main(argv) == 0
    a, b = _csvs(ref), _csvs(out)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    leftovers = [p for p in out.rglob(".*tmp*")]
    assert leftovers == []


def _exit_code(argv) -> int:
    try:
        return train_infl_eval.main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code)


@pytest.mark.parametrize("extra, words", [
    (["--infl-epochs", "5"], "--infl-epochs"),
    (["--methods", "Foo"], "--methods"),
    (["-ds", "imagenet"], "-ds/--dataset"),
    (["--jobs", "-1"], "--jobs"),
    (["--lr", "0"], "--lr"),
    (["-r", "ten"], "-r/--remove_n_list"),
])
def test_bad_flags_one_line_exit_2(csv_data, tmp_path, capsys, extra, words):
    argv = ["-o", str(tmp_path / "o"), "--model", "logreg", "-e", "2", *extra]
    assert _exit_code(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]  # what the user sees
    assert len(lines) == 1 and words in lines[0] and "error" in lines[0].lower(), lines
    assert not (tmp_path / "o").exists()


def test_csv_without_test_csv_and_missing_files(csv_data, tmp_path, logs):
    assert _exit_code(["-o", str(tmp_path / "o"), "-ds", "csv", "--train-csv", str(csv_data["train"])]) == 2
    assert _exit_code(["-o", str(tmp_path / "o"), "--train-csv", str(tmp_path / "nope.csv"),
                       "--test-csv", str(csv_data["test"])]) == 2
    errs = logs.errors()
    assert len(errs) == 2
    assert "--test-csv" in errs[0] and "nope.csv" in errs[1]


def _tiny(csv_data, out, *extra):
    return ["-o", str(out), "--train-csv", str(csv_data["train"]), "--test-csv", str(csv_data["test"]),
            "--model", "logreg", "--lr", "0.01", "-e", "2", "--batch-size", "32", "-nt", "1",
            "-r", "0", "10", "--methods", "Ours", "Random", "--jobs", "1", *extra]


def test_other_configuration_refused_unless_overwrite(csv_data, tmp_path, logs):
    out = tmp_path / "o"
    assert train_infl_eval.main(_tiny(csv_data, out)) == 0
    first = _csvs(out)
    logs.clear()
    assert _exit_code(_tiny(csv_data, out, "--lr", "0.02")) == 2
    errs = logs.errors()
    assert len(errs) == 1 and "lr: 0.01 -> 0.02" in errs[0] and "--overwrite" in errs[0]
    assert _csvs(out) == first
    # what may change between runs: jobs, more n, another method subset, more seeds
    assert train_infl_eval.main(_tiny(csv_data, out, "-r", "0", "10", "20", "--methods", "Ours")) == 0
    assert paths.score(out, "Ours", 20, 0).exists() and not paths.score(out, "Random", 20, 0).exists()
    summary = pd.read_csv(paths.summary(out))
    assert set(summary["method"]) == {"No Removal", "Ours", "Noise floor"}
    assert train_infl_eval.main(_tiny(csv_data, out, "--lr", "0.02", "--overwrite")) == 0
    second = _csvs(out)
    assert second["score/Ours/score_delete_worst_0_seed_0.csv"] != first["score/Ours/score_delete_worst_0_seed_0.csv"]
    assert "score/Ours/score_delete_worst_20_seed_0.csv" not in second
    assert C.Config.from_dict(__import__("json").loads(paths.run_config(out).read_text())).lr == 0.02


def test_phases_alone_eval_and_analyze(csv_data, tmp_path, capsys, logs):
    from sgd_influence import analyze, infl, train

    out = tmp_path / "o"
    common = ["-o", str(out), "--train-csv", str(csv_data["train"]), "--test-csv", str(csv_data["test"]),
              "--model", "logreg", "--lr", "0.01", "-e", "2", "--batch-size", "32", "--methods", "Ours",
              "Random"]
    # eval before influence: one clear line, exit 2
    assert train.main(common + ["--seed", "0"]) == 0
    logs.clear()
    assert ev.main(common + ["-nt", "1", "-r", "0", "5"]) == 2
    errs = logs.errors()
    assert len(errs) == 1 and "influence" in errs[0]
    assert infl.main(common + ["--seed", "0"]) == 0
    assert ev.main(common + ["-nt", "1", "-r", "0", "5", "--jobs", "1"]) == 0
    assert paths.score(out, "Ours", 5, 0).exists() and paths.score(out, "Random", 0, 0).exists()
    capsys.readouterr()
    assert analyze.main(["-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "No Removal" in printed and "Ours" in printed and "Storage (disk" in printed
    assert paths.figure(out).exists()
    assert analyze.main(["-o", str(tmp_path / "empty")]) == 2


@pytest.mark.slow
def test_failing_worker_stops_the_run_with_one_line(reference, tmp_path, csv_data, logs):
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    shutil.rmtree(out / "score" / "Ours")
    from sgd_influence.trajectory import Record

    rec = Record.load(paths.record(out, 1))  # whole, but naming samples the data lacks
    rec.indices[rec.indices >= 0] += 10_000
    rec.save(paths.record(out, 1))
    logs.clear()
    assert train_infl_eval.main(_args(csv_data, out, "--jobs", "2")) == 1
    errs = logs.errors()
    assert len(errs) == 1 and "seed 1 failed" in errs[0] and "\n" not in errs[0]
    assert paths.score(out, "Hara", 5, 0).exists()  # finished files stay


def test_failed_start_does_not_lock_the_folder(csv_data, tmp_path, logs):
    bad = tmp_path / "bad.csv"
    bad.write_text("x:image,y:label\nnowhere/0.png,1\nnowhere/1.png,0\n")
    out = tmp_path / "o"
    argv = _tiny(csv_data, out)
    i = argv.index("--train-csv")
    assert train_infl_eval.main(argv[:i + 1] + [str(bad)] + argv[i + 2:]) == 2
    assert len(logs.errors()) == 1 and "bad.csv" in logs.errors()[0]
    assert train_infl_eval.main(argv) == 0  # another data set, no --overwrite needed: nothing was made
