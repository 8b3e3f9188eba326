"""Training throughput and the share of a step spent preparing data, in one run.

Times the SGD steps of one epoch of cifarnet at the given batch size, and separately the
data preparation those steps do (gather, pad-crop-flip augmentation, normalisation).

    python benchmarks/bench_train.py [--width 32] [--batch 64] [--steps 10] [--channels 1] [--smoke]
"""

from __future__ import annotations

import argparse
import time

from _common import parse_with_smoke, synthetic

from sgd_influence.engine import Engine
from sgd_influence.models import ModelSpec
from sgd_influence.trajectory import make_record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--channels", type=int, default=1)
    a = parse_with_smoke(ap, {"--width": 1, "--batch": 2, "--steps": 1})

    data = synthetic(a.batch * (a.steps + 1), channels=a.channels)
    eng = Engine(ModelSpec("cifarnet", data.in_shape, data.num_classes, a.width), 0, data)
    rec = make_record(seed=0, n_train=data.n_train, n_epochs=1, batch_size=a.batch, lr=0.05,
                      lr_schedule="constant")
    eng.step(*rec.batch(0), 0.05, a.batch)  # build the graph before timing
    steps = range(1, a.steps + 1)

    t0 = time.perf_counter()
    for s in steps:
        idx, seeds = rec.batch(s)
        eng.step(idx, seeds, 0.05, len(idx))
    train = time.perf_counter() - t0

    t0 = time.perf_counter()
    for s in steps:
        eng.train_inputs(*rec.batch(s))
    prep = time.perf_counter() - t0

    n = a.steps * a.batch
    print(f"cifarnet width {a.width}, batch {a.batch}, {a.channels} channel(s), {a.steps} steps")
    print(f"training: {n / train:.1f} samples/s ({train / a.steps:.3f} s/step)")
    print(f"data preparation: {prep / a.steps * 1e3:.1f} ms/step = {100 * prep / train:.2f} % of a step "
          "(goal <= 10 %)")


if __name__ == "__main__":
    main()
