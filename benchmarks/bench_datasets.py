"""Per-step cost of the three built-in data set shapes, side by side in one run.

For cifarnet on MNIST-like (1x32x32), CIFAR-10-like (3x32x32) and STL-10-like (3x96x96)
synthetic batches: seconds per training step, per Hessian-vector product (the cost of an
influence step) and per batch-one loop of per-sample gradients, with peak memory, and
the inference cost of the same number of samples (validation and test scoring), and their
ratios to the MNIST shape. The README's run-time estimates for CIFAR-10 and STL-10
scale the measured MNIST times by these ratios.

    python benchmarks/bench_datasets.py [--width 32] [--batch 64] [--steps 2] [--smoke]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from _common import parse_with_smoke, synthetic

from sgd_influence.engine import Engine
from sgd_influence.methods import GradientOps
from sgd_influence.models import ModelSpec
from sgd_influence.trajectory import make_record

SHAPES = {"mnist": (1, 32), "cifar10": (3, 32), "stl10": (3, 96)}


def measure(channels: int, side: int, width: int, batch: int, steps: int) -> dict[str, float]:
    data = synthetic(batch * (steps + 1), channels=channels, side=side)
    eng = Engine(ModelSpec("cifarnet", data.in_shape, data.num_classes, width), 0, data)
    rec = make_record(seed=0, n_train=data.n_train, n_epochs=1, batch_size=batch, lr=0.05,
                      lr_schedule="constant")
    eng.step(*rec.batch(0), 0.05, batch)  # build the graph before timing
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        eng.step(*rec.batch(s), 0.05, batch)
    train = (time.perf_counter() - t0) / steps

    comp = GradientOps(eng, per_sample="loop")
    rng = np.random.default_rng(0)
    u = [rng.standard_normal(p.shape).astype(np.float32) for p in comp.params]
    x, y = eng.train_inputs(*rec.batch(1))
    comp.hvp(x, y, u)  # build the graph
    t0 = time.perf_counter()
    for _ in range(steps):
        comp.hvp(x, y, u)
    hvp = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    comp.per_sample_dots(x, y, u)
    loop = time.perf_counter() - t0

    eng.evaluate(data.val_x, data.val_y)  # build the inference graph
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.evaluate(data.val_x, data.val_y)
    per_sample_eval = (time.perf_counter() - t0) / steps / len(data.val_y)
    return {"train": train, "hvp": hvp, "loop": loop, "eval": per_sample_eval * batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    a = parse_with_smoke(ap, {"--width": 1, "--batch": 2, "--steps": 1})

    rows = {}
    for name, (channels, side) in SHAPES.items():
        rows[name] = measure(channels, side, a.width, a.batch, a.steps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        r = rows[name]
        print(f"{name:8s} {channels}x{side}x{side}: training {r['train']:.2f} s/step, "
              f"HVP {r['hvp']:.2f} s, per-sample loop {r['loop']:.2f} s, inference "
              f"{r['eval']:.2f} s per {a.batch} samples; peak RSS so far {peak:.0f} MB", flush=True)
    base = rows["mnist"]
    print(f"\ncifarnet width {a.width}, batch {a.batch}; ratio to the MNIST shape:")
    for name, r in rows.items():
        step = r["hvp"] + r["loop"]
        print(f"{name:8s} training step x{r['train'] / base['train']:.2f}   "
              f"influence step (HVP + loop) x{step / (base['hvp'] + base['loop']):.2f}   "
              f"inference x{r['eval'] / base['eval']:.2f}   "
              f"HVP / training step {r['hvp'] / r['train']:.1f}   "
              f"inference / training {r['eval'] / r['train']:.2f}")


if __name__ == "__main__":
    main()
