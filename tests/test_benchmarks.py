"""Every script under benchmarks/ runs at its smallest sizes and prints what it measures.

Each script is found by a glob and run as a subprocess, with its ``--smoke`` flag (or,
for bench_visit_time.py, on the finished run of bench_label_noise.py's smoke run); a new
script without an entry in SMOKE fails here. The scripts' output goes under pytest's
tmp_path: their output flags point there, and so do TMPDIR (their temporary folders),
SGD_INFLUENCE_DATA (the data folder) and the working directory; every run checks that
no file appeared in the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))
NUMBER = r"-?(?:\d+(?:\.\d*)?|nan|inf)"
_NOT_WATCHED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}


def repository_files() -> set[str]:
    """Every file under the repository (output/ included), but for git's and tools' folders."""
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _NOT_WATCHED]
        found.update(os.path.relpath(os.path.join(folder, f), ROOT) for f in files)
    return found


def run(tmp: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run benchmarks/``script`` in ``tmp`` (its temporary and data folders there too);
    assert exit status 0 and that it wrote nothing into the repository."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "SGD_INFLUENCE_DATA": str(tmp / "data"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    before = repository_files()
    res = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, (f"benchmarks/{script} {' '.join(args)} exited {res.returncode}:\n"
                                 f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    new = sorted(repository_files() - before)
    assert not new, f"benchmarks/{script} wrote into the repository: {new[:10]}"
    return res


def lines_matching(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


SMOKE = {}  # script name -> function(tmp_path, request) that runs it and checks its output


def smoke(script: str):
    def register(fn):
        SMOKE[script] = fn
        return fn
    return register


@smoke("bench_train.py")
def _train(tmp: Path, request) -> None:
    out = run(tmp, "bench_train.py", "--smoke").stdout
    assert "cifarnet width 1, batch 2, 1 channel(s), 1 steps" in out
    assert re.search(rf"^training: {NUMBER} samples/s \({NUMBER} s/step\)$", out, re.M), out
    assert re.search(rf"^data preparation: {NUMBER} ms/step = {NUMBER} % of a step", out, re.M), out


@smoke("bench_console_recipe.py")
def _console_recipe(tmp: Path, request) -> None:
    out = run(tmp, "bench_console_recipe.py", "--smoke", "-o", str(tmp / "work")).stdout
    assert re.search(rf"^recipe: -e 1 -nt 2 --no-augment from the file's weights: {NUMBER} s wall", out, re.M), out
    for label in ("Hara (mean of trials)", "Ours (mean of trials)", "Random (trial 0)"):
        assert re.search(rf"^{re.escape(label)} +{NUMBER} +{NUMBER}$", out, re.M), out
    assert (tmp / "work" / "recipe" / "influence" / "Hara" / "influence_mean.csv").is_file()


@smoke("bench_datasets.py")
def _datasets(tmp: Path, request) -> None:
    out = run(tmp, "bench_datasets.py", "--smoke").stdout
    for name, shape in (("mnist", "1x32x32"), ("cifar10", "3x32x32"), ("stl10", "3x96x96")):
        assert len(lines_matching(out, rf"^{name} +{shape}: training {NUMBER} s/step")) == 1, out
        assert len(lines_matching(out, rf"^{name} +training step x{NUMBER} ")) == 1, out
    assert lines_matching(out, r"^mnist +training step x1\.00 +influence step \(HVP \+ loop\) x1\.00"), out


@smoke("bench_infl.py")
def _infl(tmp: Path, request) -> None:
    out = run(tmp, "bench_infl.py", "--smoke").stdout
    assert "cifarnet width 1, batch 2, 1 channel(s), 1 steps" in out
    for row in ("forward+backward", "one HVP", "exact-BN step", "Ours step", "Hara step",
                "reference-style step", "per-sample: loop", "per-sample: weighted"):
        assert lines_matching(out, rf"^{re.escape(row)} +{NUMBER} +{NUMBER} +{NUMBER}$"), (row, out)
    assert re.search(rf"goal: Ours step <= 1.3 x one HVP -> {NUMBER}", out), out
    assert list(tmp.glob("bench_infl_*/train/seed_0/record.npz")), "its training run is not under TMPDIR"


@smoke("bench_hvp.py")
def _hvp(tmp: Path, request) -> None:
    out = run(tmp, "bench_hvp.py", "--smoke").stdout
    assert "cifarnet width 1 (smooth), batch 2, 1 steps, 1 rounds" in out, out
    for row in ("training step", "HVP, exact", "HVP, diff", "exact-BN step, exact", "exact-BN step, diff",
                "reference step, exact", "reference step, diff"):
        assert lines_matching(out, rf"^{re.escape(row)} +{NUMBER} +{NUMBER}$"), (row, out)
    for what in ("HVP", "exact-BN step", "reference step"):
        assert re.search(rf"^{what}: exact / diff = {NUMBER}$", out, re.M), out
    for what in ("H u", "exact step dS/dtheta", "exact step dS/dw"):
        assert re.search(rf"^  {re.escape(what)} +{NUMBER}e[-+]\d+$", out, re.M), out
    assert list(tmp.glob("bench_hvp_*/train/seed_0/record.npz")), "its training run is not under TMPDIR"


@smoke("bench_data_identity.py")
def _data_identity(tmp: Path, request) -> None:
    folder = tmp / "identity"
    out = run(tmp, "bench_data_identity.py", "--smoke", "--folder", str(folder)).stdout
    assert out.startswith("2 images, ")
    assert len(lines_matching(out, rf" {NUMBER} s +{NUMBER} x first read +{NUMBER} x hash$")) == 5, out
    assert "hashing speed" in out and (folder / "train.csv").is_file()
    assert len(list((folder / "img").glob("*.png"))) == 2


@smoke("bench_jobs.py")
def _jobs(tmp: Path, request) -> None:
    out = run(tmp, "bench_jobs.py", "--smoke", "--from", str(tmp / "no_demo"), "--work", str(tmp / "work")).stdout
    assert "2 retrains (1 seeds, methods Random, n 0 10)" in out, out
    assert len(lines_matching(out, rf"--jobs [12]: +{NUMBER} s")) == 2, out
    assert re.search(rf"speed-up of --jobs 2 over --jobs 1: {NUMBER}x", out), out
    assert "score files identical in every run: yes" in out, out
    assert (tmp / "work" / "base_smoke" / "train" / "seed_0" / "record.npz").is_file()


@pytest.fixture(scope="module")
def label_noise_run(tmp_path_factory):
    """bench_label_noise.py --smoke once for the module: (its result, its output folder)."""
    tmp = tmp_path_factory.mktemp("label_noise")
    res = run(tmp, "bench_label_noise.py", "--smoke", "-o", str(tmp / "out"))
    return res, tmp / "out"


@smoke("bench_label_noise.py")
def _label_noise(tmp: Path, request) -> None:
    res, out_dir = request.getfixturevalue("label_noise_run")
    out = res.stdout
    table = out[out.index("labels flipped ("):]
    methods = [line.split()[0] for line in lines_matching(table, rf"^\w+ +{NUMBER} +{NUMBER} +{NUMBER}")]
    assert methods == ["Hara", "Ours", "cleanlab", "Random"], table
    assert "cleanlab find_label_issues, seed 0: flags" in out
    assert "seed 0: cross-validated probabilities (2 folds)" in out, out
    assert "best possible recall@1/5/10/20 %" in out
    for made in ("bench/label_noise.csv", "bench/detection.png", "bench/cleanlab_probs_0.npz",
                 "train/seed_0/label_noise.csv"):
        assert (out_dir / made).is_file(), made


@smoke("bench_visit_time.py")
def _visit_time(tmp: Path, request) -> None:
    _res, run_dir = request.getfixturevalue("label_noise_run")
    out = run(tmp, "bench_visit_time.py", "-o", str(run_dir)).stdout
    assert out.startswith(f"Hara, 1 seed(s), {run_dir}\n"), out
    rows = lines_matching(out, rf"^ *\d+- *\d+ % +{NUMBER}-{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$")
    assert [r.split("%")[0].replace(" ", "") for r in rows] == ["0-20", "20-40", "40-60", "60-80", "80-100"], out


@smoke("bench_loo.py")
def _loo(tmp: Path, request) -> None:
    out = run(tmp, "bench_loo.py", "--smoke").stdout
    assert "cifarnet width 1, mnist5k subset n=8 (val 8), batch 4, 2 epochs" in out, out
    for schedule in ("constant", "cosine"):
        got = lines_matching(out, rf"^{schedule} ")
        labels = [" ".join(line.split()[1:-6]) for line in got]
        assert labels == ["(LOO again, weighted step)", "(FD derivative, eps 0.01)", "exact Hara", "exact Ours",
                          "reference Hara", "reference Ours", "(leave-one-out replays)"], out


@smoke("bench_lds.py")
def _lds(tmp: Path, request) -> None:
    out = run(tmp, "bench_lds.py", "--smoke", "--hvp", "exact", "diff").stdout
    assert out.startswith("LDS of the mean validation loss (the methods' target)"), out
    assert "mnist5k subset n=16 (val 8), width 1, batch 4, 2 epochs" in out, out
    assert "M = 3 subsets per alpha (the same in every setting), settings window single fresh" in out, out
    assert "R = 2 retrainings per subset (fresh), T = 2 trial(s) (fresh)" in out and "--hvp exact diff" in out, out
    header = lines_matching(out, r"^network +setting +predictor ")
    assert len(header) == 1 and header[0].split()[3:] == ["alpha", "0.1", "(k", "2)", "alpha", "0.5", "(k", "8)"], out
    cell, sci = rf"{NUMBER} \[ *{NUMBER}, *{NUMBER}\]", rf"(?:{NUMBER}e[-+]\d+|nan)"
    net = r"^cifarnet smooth \(default\) +"
    rows: dict[str, list[str]] = {}
    for line in lines_matching(out, rf"{net}(?:window|single|fresh) +\S"):
        m = re.match(rf"{net}(window|single|fresh) +(.+?) +({cell}|{sci}) +({cell}|{sci})$", line)
        assert m, line
        rows.setdefault(m[1], []).append(m[2])
    walks = ["Hara/exact", "Hara/diff", "Ours/exact", "Ours/diff", "IF/exact", "IF/diff"]
    assert rows["window"] == ["sd real", *walks, "TracIn", "Random"], out
    assert rows["single"] == ["sd real", *walks, "TracIn", "TracIn all", "Random", "ceiling",
                              "linear (eps 0.1)"], out
    fresh = [*walks, "TracIn", "TracIn all", "Random"]
    assert rows["fresh"] == ["sd real", *(x for p in fresh for x in (p, f"{p} T=2")), "seed split"], out
    sweep = out[out.index("fresh: LDS by the number T of trials"):]
    assert lines_matching(sweep, r"^network +alpha +predictor +T=1 +T=2$"), out
    got = lines_matching(sweep, rf"{net}0\.(?:10|50) +\S.* +{cell} +{cell}$")
    assert len(got) == 2 * len(fresh), out
    assert ("single: the replay of every step without removal reproduces the trained parameters bit for bit: "
            "True; fresh: a new network and make_record of seed 0, replayed, reproduce run_training bit for "
            "bit: True") in out, out
    assert re.search(rf"{net}fresh: validation loss of the 6 unremoved trainings from scratch: mean {NUMBER}",
                     out, re.M), out
    assert re.search(rf"{net}single: Spearman rho of each predictor against the finite-difference change "
                     rf"\(eps 0.1\) at alpha 0.1 / 0.5: Hara/exact {NUMBER} / {NUMBER}; Hara/diff ", out, re.M), out
    assert lines_matching(out, rf"{net}Hara {sci} \(tau {NUMBER}\), Ours "), out
    loo = lines_matching(out, rf"{net}3 +{sci}(?: +{NUMBER}/ *{NUMBER}){{8}}$")
    assert len(loo) == 1, out
    assert re.search(rf"{net}train .*window 7 replays of 4 steps {NUMBER}, single 20 replays of 8 steps "
                     rf"{NUMBER}, fresh 19 replays of 8 steps", out, re.M), out
    assert re.search(r"^total: \d+ s$", out, re.M), out


@smoke("bench_lds_examples.py")
def _lds_examples(tmp: Path, request) -> None:
    out = run(tmp, "bench_lds_examples.py", "--smoke").stdout
    assert "mnist5k 60 training and 6 target digits, subsets keep 50%, M = 5" in out, out
    assert "2 trial(s)" in out, out
    header = lines_matching(out, r"^setting +Hara ")
    assert header and header[0].split()[1:11] == ["Hara", "Hara", "T=2", "Ours", "Ours", "T=2", "IF", "IF",
                                                   "T=2", "TracIn"], out
    cell = rf"{NUMBER} ± {NUMBER}"
    rows = lines_matching(out, rf"^(single|fresh) +(?:{cell} +){{10}} *{NUMBER} +\d+ s$")
    # the per-target IF solves averaged over the targets are IF on the mean target loss
    gaps = [float(g) for g in re.findall(r"IF on their mean loss: max relative difference (\S+)$", out, re.M)]
    assert len(gaps) == 2 and max(gaps) < 1e-3, out
    assert [r.split()[0] for r in rows] == ["single", "fresh"], out
    assert re.search(r"^total \d+ s$", out, re.M), out


@smoke("bench_replay.py")
def _replay(tmp: Path, request) -> None:
    out = run(tmp, "bench_replay.py", "--smoke").stdout
    assert "cifarnet width 1, batch 2, window of 2 steps, 1 alternating runs each" in out, out
    assert len(lines_matching(out, rf"^(stored \(every-step cache\)|regenerated by replay) +{NUMBER} ")) == 2, out
    assert "scores identical bit for bit: True" in out, out


@smoke("bench_checksum.py")
def _checksum(tmp: Path, request) -> None:
    out = run(tmp, "bench_checksum.py", "--smoke").stdout
    assert "(4 rows x 1000 float32)" in out, out
    assert re.search(rf"^write with sha256: {NUMBER} s, of which hashing about {NUMBER} s", out, re.M), out
    assert re.search(r"verified: True$", out, re.M), out


def test_every_script_is_found():
    assert {"bench_train.py", "bench_datasets.py", "bench_label_noise.py"} <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_run(script, tmp_path, request):
    if script not in SMOKE:
        pytest.fail(f"benchmarks/{script} has no smoke run: add one to SMOKE in tests/test_benchmarks.py "
                    "(a --smoke flag that sets its smallest sizes)")
    SMOKE[script](tmp_path, request)
