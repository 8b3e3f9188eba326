"""Label noise: seeded flipping of a fraction of the training labels.

Two ways, chosen by ``--label-noise-seed``:

* :func:`flip_rows` (the default): the flips belong to the data set. They are drawn once
  over the rows a training split can come from (its *pool*, named by trial-independent
  ids), seeded by ``--label-noise-seed`` alone, so a row flipped in one trial is flipped,
  to the same class, in every trial in which it is a training row;
* :func:`flip_labels`: the flips of runs made before ``--label-noise-seed`` existed, drawn
  over the positions of one trial's training split and seeded by the trial seed (another
  set of rows in every trial). Kept so that such runs' folders are read and continued
  with the flips they were trained with.
"""

from __future__ import annotations

import numpy as np


def _check(fraction: float, k: int, num_classes: int) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"--label-noise: expected a fraction in [0, 1), got {fraction}")
    if k and num_classes < 2:
        raise ValueError("--label-noise: needs at least two classes")


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int):
    """Flip exactly round(fraction * N) labels, each to a different class.

    Returns (new labels, boolean mask of the flipped rows). Seeded by the trial seed:
    the per-trial flips of runs made before --label-noise-seed (see the module docstring).
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    k = int(round(fraction * n))
    _check(fraction, k, num_classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401E]))
    rows = rng.choice(n, size=k, replace=False)
    shift = rng.integers(1, num_classes, size=k)
    out = labels.copy()
    out[rows] = (labels[rows] + shift) % num_classes
    mask = np.zeros(n, bool)
    mask[rows] = True
    return out, mask


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
