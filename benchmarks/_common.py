"""Shared setup of the benchmarks: a synthetic data set of a given size and shape."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synth import make_dataset  # noqa: E402

from sgd_influence.engine import prepare  # noqa: E402


def synthetic(n_train: int, channels: int = 1, side: int = 32, seed: int = 0):
    return prepare(make_dataset(n_train, 64, 64, seed=seed, side=side, channels=channels), seed)
