"""Influence step cost, side by side in one run, on the same recorded steps.

Prints seconds per step of: one Hessian-vector product alone; the exact-BN step
(``--bn-influence exact``: one double backward of one scalar through weighted batch
statistics, all per-sample terms and the adjoint update at once); our influence step
(Ours: final weights held in memory, per-sample terms by the context's cheapest exact
path); Hara's step (parameters read from the every-step cache); and the reference-style
procedure (a batch-one loop for the per-sample terms, a separate HVP, and the parameters
reloaded from a snapshot file on disk every step). Ratios are what to compare: the
machine is shared and noisy.

    python benchmarks/bench_infl.py [--width 32] [--batch 64] [--steps 3] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import parse_with_smoke, synthetic

from sgd_influence import config as C
from sgd_influence import paths
from sgd_influence.engine import Engine, model_spec
from sgd_influence.methods import GradientOps
from sgd_influence.train import run_training
from sgd_influence.trajectory import (
    Record,
    cached_params,
    load_final_state,
    load_snapshot,
    save_snapshot,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--channels", type=int, default=1)
    a = parse_with_smoke(ap, {"--width": 1, "--batch": 2, "--steps": 1})

    out = tempfile.mkdtemp(prefix="bench_infl_")
    data = synthetic(a.batch * a.steps, channels=a.channels)
    cfg = C.Config(output=out, model="cifarnet", width=a.width, batch_size=a.batch, n_epochs=1,
                   hara_cache=True)
    run_training(cfg, 0, data)
    rec = Record.load(paths.record(out, 0))
    eng = Engine(model_spec(cfg, data), 0, data)
    final = load_final_state(out, 0)
    eng.net.load_state_dict(final)
    comp = GradientOps(eng, context="cpu")
    u = comp.val_gradient()
    a_theta, a_r = comp.val_gradient_exact()
    steps = list(rec.window(1))
    params_at = cached_params(out, 0, rec, rec.window(1))
    snap_file = paths.train_dir(out, 0) / "bench_step.npz"
    save_snapshot(snap_file, final)

    def batch(s):
        idx, seeds = rec.batch(s)
        return eng.train_inputs(idx, seeds)

    for s in steps[:1]:  # build every graph once before timing
        x, y = batch(s)
        comp.hvp(x, y, u)
        comp.per_sample_dots(x, y, u, mode="loop")
        comp.per_sample_dots(x, y, u, mode="weighted")
        comp.exact_step_terms(x, y, a_theta, a_r, 0.05)

    def timed(fn):
        t0 = time.perf_counter()
        for s in steps:
            fn(s)
        return (time.perf_counter() - t0) / len(steps)

    def fwd_bwd(s):
        idx, seeds = rec.batch(s)
        eng.step(idx, seeds, 0.0, len(idx))

    def hvp_only(s):
        x, y = batch(s)
        comp.hvp(x, y, u)

    def ours(s):
        x, y = batch(s)
        comp.step_terms(x, y, u)

    def hara(s):
        eng.net.set_flat(params_at(s))
        x, y = batch(s)
        comp.step_terms(x, y, u)

    def exact(s):
        x, y = batch(s)
        comp.exact_step_terms(x, y, a_theta, a_r, float(rec.lr[s]))

    def loop_only(s):
        x, y = batch(s)
        comp.per_sample_dots(x, y, u, mode="loop")

    def weighted_only(s):
        x, y = batch(s)
        comp.per_sample_dots(x, y, u, mode="weighted")
        comp.exact_step_terms(x, y, a_theta, a_r, 0.05)

    def reference_style(s):
        eng.net.load_state_dict(load_snapshot(snap_file))
        x, y = batch(s)
        comp.per_sample_dots(x, y, u, mode="loop")
        comp.hvp(x, y, u)

    rows = {}
    for name, fn in (("forward+backward", fwd_bwd), ("one HVP", hvp_only), ("exact-BN step", exact),
                     ("one HVP (again)", hvp_only), ("Ours step", ours),
                     ("Hara step", hara), ("reference-style step", reference_style),
                     ("per-sample: loop", loop_only), ("per-sample: weighted", weighted_only)):
        rows[name] = timed(fn)
        eng.net.load_state_dict(final)
    hvp = 0.5 * (rows["one HVP"] + rows["one HVP (again)"])  # before and after: drift
    print(f"cifarnet width {a.width}, batch {a.batch}, {a.channels} channel(s), {len(steps)} steps, "
          f"per-sample path '{comp.per_sample}'")
    print(f"{'':24s} {'s/step':>8s} {'x HVP':>7s} {'x fwd+bwd':>10s}")
    for name, sec in rows.items():
        print(f"{name:24s} {sec:8.3f} {sec / hvp:7.2f} {sec / rows['forward+backward']:10.2f}")
    print(f"goal: Ours step <= 1.3 x one HVP -> {rows['Ours step'] / hvp:.2f}")
    print(f"goal: exact-BN step <= 1.5 x one HVP -> {rows['exact-BN step'] / hvp:.2f}")


if __name__ == "__main__":
    main()
