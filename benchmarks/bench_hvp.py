"""Second derivatives by double backward (``--hvp exact``) against central differences of
first-order gradients (``--hvp diff``): cost and error, side by side in one run.

On cifarnet (the default smooth network unless ``--no-smooth``) trained one epoch on
synthetic data, for the same recorded batches, at the final parameters:

* cost, as ratios to one training step (``Engine.step``: forward, backward, update):
  one Hessian-vector product each way, the exact batch-norm step each way (the default
  walk's step: all per-sample terms and the adjoint's increment), and the reference
  walk's step each way (per-sample loop and H u, ``--bn-influence reference``). The
  operations are timed in interleaved rounds (one step of each per round) and each row
  is the median over the rounds, so a drift of the shared machine hits every row alike;
* error of ``diff`` against ``exact``: relative error of H u and of the exact step's
  two outputs (dS/dtheta, the per-sample terms dS/dw), at the same steps.

``--recipe`` (not with ``--smoke``) also runs benchmarks/bench_console_recipe.py once
each way and prints its wall times (several minutes each on 2 cores).

    python benchmarks/bench_hvp.py [--width 32] [--batch 64] [--rounds 5] [--no-smooth]
        [--recipe] [--jobs 2] [--smoke]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import ROOT, parse_with_smoke, synthetic

from sgd_influence import config as C
from sgd_influence import paths
from sgd_influence.engine import Engine, model_spec
from sgd_influence.methods import GradientOps
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_final_state


def rel(a, b) -> float:
    a = np.concatenate([np.ravel(x) for x in a]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in b]).astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def recipe_seconds(hvp: str, jobs: int) -> float:
    """Wall time of bench_console_recipe.py with ``--hvp``, as it prints it."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_console_recipe.py"),
                          "--hvp", hvp, "--jobs", str(jobs)], check=True, capture_output=True, text=True)
    sys.stdout.write("".join(f"  [{hvp}] {line}\n" for line in res.stdout.splitlines()))
    return float(re.search(r"from the file's weights: ([0-9.]+) s wall", res.stdout).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4, help="recorded steps (batches) the rounds cycle through")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--recipe", action="store_true", help="also the console recipe's wall time each way")
    ap.add_argument("--jobs", type=int, default=2, help="--jobs of the recipe")
    a = parse_with_smoke(ap, {"--width": 1, "--batch": 2, "--steps": 1, "--rounds": 1})
    if a.smoke and a.recipe:
        ap.error("--recipe: not with --smoke (bench_console_recipe.py has its own smoke run)")

    out = tempfile.mkdtemp(prefix="bench_hvp_")
    data = synthetic(a.batch * a.steps)
    cfg = C.Config(output=out, model="cifarnet", width=a.width, batch_size=a.batch, n_epochs=1,
                   smooth=a.smooth, augment=False)
    run_training(cfg, 0, data)
    rec = Record.load(paths.record(out, 0))
    eng = Engine(model_spec(cfg, data), 0, data, augment=False)
    final = load_final_state(out, 0)
    eng.net.load_state_dict(final)
    ops = {m: GradientOps(eng, context="cpu", hvp=m) for m in ("exact", "diff")}
    u = ops["exact"].val_gradient()
    a_theta, a_r = ops["exact"].val_gradient_exact()
    steps = list(rec.window(1))
    batches = {s: eng.train_inputs(*rec.batch(s)) for s in steps}

    errors = {"H u": [], "exact step dS/dtheta": [], "exact step dS/dw": []}
    for s in steps:  # builds every graph before timing; the errors at every step
        x, y = batches[s]
        lr = float(rec.lr[s])
        h = {m: ops[m].hvp(x, y, u) for m in ops}
        e = {m: ops[m].exact_step_terms(x, y, a_theta, a_r, lr) for m in ops}
        for m in ops:
            ops[m].step_terms(x, y, u)
        errors["H u"].append(rel(h["diff"], h["exact"]))
        errors["exact step dS/dtheta"].append(rel(e["diff"][1], e["exact"][1]))
        errors["exact step dS/dw"].append(rel([e["diff"][0]], [e["exact"][0]]))

    def train_step(s):
        idx, seeds = rec.batch(s)
        eng.step(idx, seeds, 0.0, len(idx))  # lr 0: the parameters stay

    def op(kind, mode):
        def run(s):
            x, y = batches[s]
            if kind == "hvp":
                ops[mode].hvp(x, y, u)
            elif kind == "exact":
                ops[mode].exact_step_terms(x, y, a_theta, a_r, float(rec.lr[s]))
            else:
                ops[mode].step_terms(x, y, u)
        return run

    rows = {"training step": train_step}
    for mode in ("exact", "diff"):
        rows[f"HVP, {mode}"] = op("hvp", mode)
    for mode in ("exact", "diff"):
        rows[f"exact-BN step, {mode}"] = op("exact", mode)
    for mode in ("exact", "diff"):
        rows[f"reference step, {mode}"] = op("reference", mode)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(a.rounds):
        s = steps[r % len(steps)]
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn(s)
            times[name].append(time.perf_counter() - t0)
    eng.net.load_state_dict(final)
    med = {name: float(np.median(t)) for name, t in times.items()}
    base = med["training step"]
    print(f"cifarnet width {a.width} ({'smooth' if a.smooth else 'ReLU'}), batch {a.batch}, "
          f"{len(steps)} steps, {a.rounds} rounds, per-sample path '{ops['exact'].per_sample}'")
    print(f"{'':26s} {'s/step':>8s} {'x training step':>16s}")
    for name in rows:
        print(f"{name:26s} {med[name]:8.4f} {med[name] / base:16.2f}")
    for what in ("HVP", "exact-BN step", "reference step"):
        print(f"{what}: exact / diff = {med[f'{what}, exact'] / med[f'{what}, diff']:.2f}")
    print("relative error of diff against exact (median over the steps):")
    for name, v in errors.items():
        print(f"  {name:24s} {np.median(v):.2e}")
    if a.recipe:
        wall = {m: recipe_seconds(m, a.jobs) for m in ("exact", "diff")}
        print(f"console recipe (-e 1 -nt 6 --no-augment, --jobs {a.jobs}): exact {wall['exact']:.0f} s, "
              f"diff {wall['diff']:.0f} s, exact / diff = {wall['exact'] / wall['diff']:.2f}")


if __name__ == "__main__":
    main()
