"""Label noise: seeded flipping of a fraction of the training labels.

The flips belong to the data set (:func:`flip_rows`). They are drawn once over the rows
a training split can come from (its *pool*, named by trial-independent ids), seeded by
``--label-noise-seed`` alone, so a row flipped in one trial is flipped, to the same
class, in every trial in which it is a training row.
"""

from __future__ import annotations

import numpy as np


def _check(fraction: float, k: int, num_classes: int) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"--label-noise: expected a fraction in [0, 1), got {fraction}")
    if k and num_classes < 2:
        raise ValueError("--label-noise: needs at least two classes")


def pool_shifts(pool, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The flips of a data set: (the pool's ids ascending, the label shift of each).

    Exactly round(fraction * P) of the P distinct ids get a shift in 1 .. num_classes - 1
    (the label becomes (label + shift) mod num_classes, another class); the others 0. The
    draw depends on the set of ids and ``seed`` only, not on their order or on a trial.
    """
    ids = np.unique(np.asarray(pool, np.int64))
    k = int(round(fraction * len(ids)))
    _check(fraction, k, num_classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401E, 0xDA7A]))
    chosen = rng.choice(len(ids), size=k, replace=False)
    shift = np.zeros(len(ids), np.int64)
    shift[chosen] = rng.integers(1, num_classes, size=k)
    return ids, shift


def flip_rows(labels: np.ndarray, ids, pool, fraction: float, num_classes: int, seed: int):
    """Flip the labels of the training samples whose row the data set's flips name.

    ``ids``: the trial-independent id of each training sample (a CSV row, a built-in set's
    source index); ``pool``: the ids of every row a training split can hold (the training
    ids, and the validation ids when validation is drawn from the same rows).
    round(fraction * |pool|) rows of the pool are flipped (:func:`pool_shifts`), so a
    training split that is the whole pool has exactly that many flips and one drawn from
    it about ``fraction`` of its rows. Returns (new labels, boolean mask of the flipped
    samples).
    """
    labels = np.asarray(labels, np.int64)
    ids = np.asarray(ids, np.int64)
    pool_ids, shift = pool_shifts(np.concatenate([np.asarray(pool, np.int64), ids]), fraction,
                                  num_classes, seed)
    s = shift[np.searchsorted(pool_ids, ids)]
    return (labels + s) % num_classes, s > 0
