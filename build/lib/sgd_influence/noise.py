"""Label noise: seeded flipping of a fraction of the training labels."""

from __future__ import annotations

import numpy as np


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int):
    """Flip exactly round(fraction * N) labels, each to a different class.

    Returns (new labels, boolean mask of the flipped rows). Seeded by the trial seed.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    k = int(round(fraction * n))
    if not 0 <= fraction < 1:
        raise ValueError(f"--label-noise: expected a fraction in [0, 1), got {fraction}")
    if k and num_classes < 2:
        raise ValueError("--label-noise: needs at least two classes")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401E]))
    rows = rng.choice(n, size=k, replace=False)
    shift = rng.integers(1, num_classes, size=k)
    out = labels.copy()
    out[rows] = (labels[rows] + shift) % num_classes
    mask = np.zeros(n, bool)
    mask[rows] = True
    return out, mask
