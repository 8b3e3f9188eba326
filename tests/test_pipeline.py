"""End-to-end tests of train_infl_eval.py on a tiny CSV data set of PNG files:
file tree and contents, reuse, resume after kills, --jobs 2 (a local Dask cluster) and
a Dask cluster of worker processes (--scheduler) == --jobs 1, Ctrl-C, bad flags; and the
in-process executor, the plan and the GPU choice of a worker on their own."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synth import view_files, write_csv_split

import train_infl_eval
from sgd_influence import cli, execute, flags, paths, plan, worker
from sgd_influence import config as C
from sgd_influence import eval as ev

ROOT = Path(__file__).resolve().parents[1]
REMOVE = ["0", "1", "2", "3", "5", "8", "13", "20", "30", "50", "500"]  # 500 >= training size
N_TRAIN, N_VAL, N_TEST, CLASSES, SIDE = 120, 40, 40, 4, 28


def _write_split(folder: Path, name: str, n: int, rng) -> Path:
    return write_csv_split(folder, name, n, rng, CLASSES, SIDE)


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


def _csvs(out: Path) -> dict[str, bytes]:
    """Every CSV of the view (the links into the store followed; the store itself not)."""
    return view_files(out, "*.csv")


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
        assert paths.train_identity(out).exists()
        for f in ("record.npz", "history.csv", "final.h5", "snapshots/epoch_000.npz",
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
    # within one seed, removing samples changes the result; Random's choice differs from the
    # influence methods' (Hara and Ours may pick the same 50 of 120: their scores differ)
    for s in (0, 1):
        kept_all = pd.read_csv(paths.score(out, methods[0], 0, s))["val_loss"].iloc[0]
        removed = {m: pd.read_csv(paths.score(out, m, 50, s))["val_loss"].iloc[0] for m in methods}
        assert all(v != kept_all for v in removed.values()), (s, kept_all, removed)
        assert removed["Random"] not in (removed["Hara"], removed["Ours"]), (s, removed)
        hara, ours = (pd.read_csv(paths.influence(out, m, s)).sort_values("datasource_index")["influence"]
                      .to_numpy() for m in ("Hara", "Ours"))
        assert not np.array_equal(hara, ours)
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
    saved_config = ("config.json", ".config.json.sha256")  # the run's settings are saved again
    changed = [str(p) for p in before if before[p] != after[p] and p.name not in saved_config]
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


def _spawn(argv, log, sigint: bool = False):
    """The pipeline in a new process group (``sigint``: with Ctrl-C's default action, which
    a shell may have turned off for background jobs)."""
    reset = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sigint else None
    return subprocess.Popen([sys.executable, str(ROOT / "train_infl_eval.py"), *argv], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=reset)


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
        ("influence", lambda: any(out.glob("influence/*/influence_*.csv"))),
        ("evaluation", lambda: len(list(out.glob("score/*/score_*.csv"))) >= 8),
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
    errs = logs.at_least(logging.ERROR)
    assert len(errs) == 2
    assert "--test-csv" in errs[0] and "nope.csv" in errs[1]


def _tiny(csv_data, out, *extra):
    return ["-o", str(out), "--train-csv", str(csv_data["train"]), "--test-csv", str(csv_data["test"]),
            "--model", "logreg", "--lr", "0.01", "-e", "2", "--batch-size", "32", "-nt", "1",
            "-r", "0", "10", "--methods", "Ours", "Random", "--jobs", "1", *extra]


def test_other_configuration_kept_and_overwrite_computes_again(csv_data, tmp_path, logs):
    out = tmp_path / "o"
    assert train_infl_eval.main(_tiny(csv_data, out)) == 0
    first = _csvs(out)
    assert train_infl_eval.main(_tiny(csv_data, out, "--lr", "0.02")) == 0
    second = _csvs(out)
    assert second["score/Ours/score_delete_worst_0_seed_0.csv"] != first["score/Ours/score_delete_worst_0_seed_0.csv"]
    assert C.Config.from_dict(__import__("json").loads(paths.run_config(out).read_text())).lr == 0.02
    # what changes no result: jobs, more n, another method subset, more seeds
    logs.clear()
    assert train_infl_eval.main(_tiny(csv_data, out, "-r", "0", "10", "20", "--methods", "Ours")) == 0
    assert [m.split(" (")[0] for m in logs.at(logging.INFO) if m.startswith("done: ")] == [
        "done: retrain Ours n=20 seed 0"]
    assert paths.score(out, "Ours", 20, 0).exists() and not paths.score(out, "Random", 20, 0).exists()
    summary = pd.read_csv(paths.summary(out))
    assert set(summary["method"]) == {"No Removal", "Ours", "Noise floor"}
    now = _csvs(out)
    assert {k: now[k] for k in first if not k.startswith("summary")} == {
        k: v for k, v in first.items() if not k.startswith("summary")}
    logs.clear()
    assert train_infl_eval.main(_tiny(csv_data, out, "--lr", "0.02", "--overwrite")) == 0
    assert any(m.startswith("done: train seed 0") for m in logs.at(logging.INFO))
    assert {k: v for k, v in _csvs(out).items() if not k.startswith("summary")} == {
        k: v for k, v in second.items() if not k.startswith("summary")}  # the same bytes again


def test_phases_alone_eval_and_analyze(csv_data, tmp_path, capsys, logs):
    out = tmp_path / "o"
    common = ["-o", str(out), "--train-csv", str(csv_data["train"]), "--test-csv", str(csv_data["test"]),
              "--model", "logreg", "--lr", "0.01", "-e", "2", "--batch-size", "32", "--methods", "Ours",
              "Random"]
    # eval before influence: one clear line, exit 2
    assert cli.train_main(common + ["--seed", "0"]) == 0
    logs.clear()
    assert cli.eval_main(common + ["-nt", "1", "-r", "0", "5"]) == 2
    errs = logs.at_least(logging.ERROR)
    assert len(errs) == 1 and "influence" in errs[0]
    assert cli.infl_main(common + ["--seed", "0"]) == 0
    assert cli.eval_main(common + ["-nt", "1", "-r", "0", "5", "--jobs", "1"]) == 0
    assert paths.score(out, "Ours", 5, 0).exists() and paths.score(out, "Random", 0, 0).exists()
    capsys.readouterr()
    assert cli.analyze_main(["-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "No Removal" in printed and "Ours" in printed and "Storage (disk" in printed
    assert paths.figure(out).exists()
    assert cli.analyze_main(["-o", str(tmp_path / "empty")]) == 2


@pytest.mark.slow
def test_failing_worker_stops_the_run_with_one_line(reference, tmp_path, csv_data, logs):
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out, symlinks=True)
    shutil.rmtree((out / "score" / "Ours").resolve())  # the store's entry the view links
    from sgd_influence.trajectory import Record

    rec = Record.load(paths.record(out, 1))  # whole, but naming samples the data lacks
    rec.indices[rec.indices >= 0] += 10_000
    rec.save(paths.record(out, 1))
    logs.clear()
    assert train_infl_eval.main(_args(csv_data, out, "--jobs", "2")) == 1
    errs = logs.at_least(logging.ERROR)
    assert len(errs) == 1 and "seed 1 failed" in errs[0] and "\n" not in errs[0]
    assert paths.score(out, "Hara", 5, 0).exists()  # finished files stay


def test_failed_start_does_not_lock_the_folder(csv_data, tmp_path, logs):
    bad = tmp_path / "bad.csv"
    bad.write_text("x:image,y:label\nnowhere/0.png,1\nnowhere/1.png,0\n")
    out = tmp_path / "o"
    argv = _tiny(csv_data, out)
    i = argv.index("--train-csv")
    assert train_infl_eval.main(argv[:i + 1] + [str(bad)] + argv[i + 2:]) == 2
    assert len(logs.at_least(logging.ERROR)) == 1 and "bad.csv" in logs.at_least(logging.ERROR)[0]
    assert train_infl_eval.main(argv) == 0  # another data set, no --overwrite needed: nothing was made


# --------------------------------------------------------------------------- execution
class _FakePlan:
    """Two seeds; each training releases two influence tasks, seed 0 also a retrain."""

    def __init__(self, cfg):
        self.cfg = cfg

    def initial(self):
        return [plan.Step(plan.Task("train", 1)), plan.Step(plan.Task("train", 0))]

    def released_by(self, task):
        if task.kind != "train":
            return []
        infl = {m: plan.Task("infl", task.seed, method=m) for m in ("Random", "Hara")}
        steps = [plan.Step(t) for t in infl.values()]
        if task.seed == 0:
            job = ev.EvalJob(0, 7, ("Random",))
            steps.insert(0, plan.Step(plan.Task("eval", 0, job=job), (infl["Random"],)))
        return steps


def test_in_process_order_and_one_line_failure(tmp_path, monkeypatch):
    seen = []

    def perform(cfg, task, progress):
        seen.append(task.label)
        if task.kind == "eval":
            raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(execute, "perform", perform)
    with pytest.raises(execute.TaskFailed) as err:
        execute.execute(_FakePlan(C.Config(output=str(tmp_path))), jobs=1)
    assert str(err.value) == "retrain Random n=7 seed 0 failed: RuntimeError: boom second line"
    # training first; then the seed this process holds; Hara before Random; the retrain
    # after its influence file
    assert seen == ["train seed 0", "train seed 1", "influence Hara seed 1", "influence Random seed 1",
                    "influence Hara seed 0", "influence Random seed 0", "retrain Random n=7 seed 0"]


def test_user_errors_from_tasks_keep_their_message(tmp_path, monkeypatch):
    def perform(cfg, task, progress):
        raise ValueError("--lr: too large")

    monkeypatch.setattr(execute, "perform", perform)
    with pytest.raises(ValueError, match="^--lr: too large$"):
        execute.execute(_FakePlan(C.Config(output=str(tmp_path))), jobs=1)


def _error_ctrl_c_caused():
    """What Ctrl-C inside nnabla's C++ code raises: a SystemError in the KeyboardInterrupt's wake."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemError("<cyfunction Variable.forward> returned a result with an exception set")  # noqa: B904


def test_an_error_ctrl_c_caused_is_an_interruption(tmp_path, monkeypatch, logs):
    def perform(cfg, task, progress):
        _error_ctrl_c_caused()

    monkeypatch.setattr(execute, "perform", perform)
    with pytest.raises(KeyboardInterrupt):  # in process (--jobs 1, run(jobs=1))
        execute.execute(_FakePlan(C.Config(output=str(tmp_path))), jobs=1)
    # a phase command runs its tasks itself: exit 130 and the one line
    parser = cli.OneLineParser(prog="x")
    assert cli.run_cli(parser, [], lambda cfg, ns: _error_ctrl_c_caused(), configured=False) == 130
    errors = logs.at(logging.ERROR)
    assert len(errors) == 1 and errors[0].startswith("interrupted"), errors


def test_planning_writes_nothing_and_the_no_removal_copy_is_a_task(reference, csv_data, tmp_path):
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out, symlinks=True)
    missing = paths.score(out, "Ours", 0, 1)
    missing.unlink()
    cfg = flags.from_args(cli.phase_parser("x", None, "pipeline").parse_args(_args(csv_data, out, "--jobs", "1")))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    steps = plan.Plan(cfg, plan.PHASES, [0, 1]).initial()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert [(s.task.label, s.after) for s in steps] == [("retrain No Removal seed 1", ())]
    report = execute.execute(plan.Plan(cfg, plan.PHASES, [0, 1]), jobs=1)
    assert report.done == 1
    assert missing.read_bytes() == paths.score(ref, "Ours", 0, 1).read_bytes()


def test_worker_gpu_choice():
    """The device a worker computes on and whether tasks hold one GPU each."""
    assert worker.device_id(3, {}) == 3  # -di
    assert worker.device_id(3, {"CUDA_VISIBLE_DEVICES": "2"}) == 0  # the one device it sees
    assert worker.device_id(3, {"CUDA_VISIBLE_DEVICES": "5,1,2"}) == 0  # dask-cuda: its own first
    assert worker.device_id(1, {"CUDA_VISIBLE_DEVICES": ""}) == 1
    assert worker.device_id(1, {"CUDA_VISIBLE_DEVICES": "-1"}) == 1
    gpus = [{"resources": {"GPU": 1}}, {"resources": {}}]
    assert execute.one_task_per_gpu("auto", gpus) and execute.one_task_per_gpu("cudnn", gpus)
    assert not execute.one_task_per_gpu("cpu", gpus)
    assert not execute.one_task_per_gpu("cudnn", [{"resources": {}}, {}])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded worker processes on 127.0.0.1."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    addr = f"tcp://127.0.0.1:{_free_port()}"
    # as the README starts them: the venv's dask, in any folder, no PYTHONPATH (the project
    # is installed into the venv by `make venv`)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = open(tmp_path_factory.mktemp("dask") / "log.txt", "wb")  # noqa: SIM115
    cmds = [[dask, "scheduler", "--host", "127.0.0.1", "--port", addr.rsplit(":", 1)[1], "--no-dashboard"]]
    cmds += [[dask, "worker", addr, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
              "--no-dashboard", "--name", f"w{i}"] for i in range(2)]
    procs = [subprocess.Popen(c, cwd=tmp_path_factory.mktemp("cwd"), env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True) for c in cmds]
    try:
        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield addr
    finally:
        for p in procs[::-1]:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs[::-1]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()


@pytest.mark.slow
def test_dask_cluster_gives_the_same_files_as_jobs_1(reference, csv_data, dask_cluster, tmp_path):
    ref, _ = reference
    out = tmp_path / "out"
    assert train_infl_eval.main(_args(csv_data, out, "--scheduler", dask_cluster)) == 0
    a, b = _csvs(ref), _csvs(out)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


@pytest.mark.slow
def test_worker_killed_in_a_task_then_rerun_gives_the_same_files(reference, csv_data, dask_cluster,
                                                                 tmp_path):
    from distributed import Client

    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out, symlinks=True)
    for part in ("score", "summary", "fig", "store/score"):
        shutil.rmtree(out / part)
    argv = _args(csv_data, out, "--scheduler", dask_cluster)
    argv[argv.index("-r") + 1:argv.index("-r") + 1 + len(REMOVE)] = ["0", "1", "2", "3", "5"]
    killed = None
    with open(tmp_path / "log.txt", "wb") as log, Client(dask_cluster) as client:
        proc = _spawn(argv, log)
        t_end = time.monotonic() + 120
        while killed is None and proc.poll() is None and time.monotonic() < t_end:
            if len(list(out.glob("score/*/score_*.csv"))) >= 4:
                busy = {w: keys for w, keys in client.processing().items()
                        if any("retrain" in str(k) for k in keys)}
                if busy:
                    worker = sorted(busy)[0]
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    os.kill(pid, signal.SIGKILL)
                    killed = worker
            time.sleep(0.01)
        rc = proc.wait(120)
        client.wait_for_workers(2, timeout=60)  # the nanny started another worker process
    text = (tmp_path / "log.txt").read_text()
    assert killed is not None, text[-3000:]
    # Dask ran the task again on a worker (rc 0), or the run ended with one error line
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert rc == 0 and errors == [] or rc == 1 and len(errors) == 1 and "failed" in errors[0], text[-3000:]
    assert "Traceback" not in text
    print("exit status after the kill:", rc)
    assert train_infl_eval.main(argv) == 0
    a, b = _csvs(ref), _csvs(out)
    assert all(paths.score(out, m, n, seed).exists() for m in C.METHODS for n in (0, 1, 2, 3, 5)
               for seed in (0, 1))
    assert [k for k in b if not k.startswith("summary") and a[k] != b[k]] == []  # all but the summary
    assert list(out.rglob(".*tmp*")) == []


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_exit_130_and_stops_the_workers(reference, csv_data, tmp_path):
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out, symlinks=True)
    shutil.rmtree(out / "score")
    shutil.rmtree(out / "store" / "score")
    with open(tmp_path / "log.txt", "wb") as log:
        proc = _spawn(_args(csv_data, out, "--jobs", "2"), log, sigint=True)
        t_end = time.monotonic() + 120
        while not len(list(out.glob("score/*/score_*.csv"))) >= 4:
            assert proc.poll() is None and time.monotonic() < t_end, "the run ended before Ctrl-C"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rc = proc.wait(60)
    text = (tmp_path / "log.txt").read_text()
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert rc == 130 and len(errors) == 1 and "interrupted" in errors[0], text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    t_end = time.monotonic() + 20
    while _group_alive(proc.pid):  # the worker processes end with the run
        assert time.monotonic() < t_end, "worker processes outlived the run"
        time.sleep(0.1)


SLOW_IN_WORKERS = '''
import multiprocessing
import time

import nnabla.parametric_functions as PF
from tqdm import tqdm


def net(x, num_classes, norm):
    if multiprocessing.parent_process() is not None:  # in a worker (not the run's own check)
        for _ in tqdm(range(600), desc="building", disable=True):  # the network's own bar
            time.sleep(0.1)
    return PF.affine(norm(PF.convolution(x, 2, (3, 3), pad=(1, 1)), "bn"), num_classes)
'''


@pytest.mark.slow
def test_ctrl_c_while_workers_are_busy_prints_the_one_line_only(csv_data, tmp_path):
    """Workers busy past the nannies' grace time are killed: no Dask warning about it, and
    no "leaked semaphore" warning of the resource tracker (the bars' lock in a worker)."""
    net = tmp_path / "net.py"
    net.write_text(SLOW_IN_WORKERS)
    log_path = tmp_path / "log.txt"
    held = socket.socket()  # Dask's default HTTP port taken (another run, a notebook): no warning
    try:
        held.bind(("", 8787))
        held.listen()
    except OSError:
        pass  # taken already
    with held, open(log_path, "wb") as log:
        proc = _spawn(_args(csv_data, tmp_path / "out", "--jobs", "2", "--model", f"{net}:net"), log,
                      sigint=True)
        t_end = time.monotonic() + 120
        while "running on a local Dask cluster" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < t_end, log_path.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(3)  # both workers are in their first task
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(60)
        t_end = time.monotonic() + 20
        while _group_alive(proc.pid):  # the resource tracker reports when the last one ends
            assert time.monotonic() < t_end, "processes outlived the run"
            time.sleep(0.1)
    text = log_path.read_text()
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert rc == 130 and len(errors) == 1 and "interrupted" in errors[0], text[-3000:]
    for noise in ("WARNING", "leaked", "Warning", "Traceback", "distributed."):  # nor Dask's start-up
        assert noise not in text, (noise, text[-3000:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
