"""Types and small helpers shared by the data layer (see the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

log = logging.getLogger("sgd_influence.data")


class DataError(ValueError):
    """Unusable input data.

    The message is one line that names the offending file, URL or flag and says
    what was expected; the command line prints it as is and exits with status 2.
    """


@dataclass(frozen=True)
class Split:
    """One split (train, validation or test) of a data set.

    images: uint8 (N, C, H, W), C in {1, 3}, as stored (no resizing).
    labels: int64 (N,).
    rows:   int64 (N,), the data row (0-based, header not counted) of each sample
            in the CSV this split comes from or would be exported to.
    paths:  the image path of each sample as written in that CSV (relative to it).
    """

    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("Split.images must be a uint8 array of shape (N, C, H, W)")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"Split.images must have 1 or 3 channels, got {images.shape[1]}")
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
        paths = tuple(str(p) for p in self.paths)
        n = images.shape[0]
        if not (labels.shape[0] == rows.shape[0] == len(paths) == n):
            raise ValueError(
                f"Split fields disagree in length: images {n}, labels {labels.shape[0]}, "
                f"rows {rows.shape[0]}, paths {len(paths)}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "paths", paths)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DataSet:
    """A data set with its three splits; name is a built-in name or 'csv'."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int


def take(split: Split, index: np.ndarray) -> Split:
    """The samples `index` of `split`, in that order (rows and paths carried along)."""
    index = np.asarray(index, dtype=np.int64)
    return Split(
        images=split.images[index],
        labels=split.labels[index],
        rows=split.rows[index],
        paths=tuple(split.paths[i] for i in index),
    )


def stratified_pick(labels: np.ndarray, n_pick: int, rng: np.random.Generator) -> np.ndarray:
    """Choose `n_pick` of the indices 0..N-1 with the class proportions of `labels`.

    Each class gets floor(n_pick * n_c / N) samples; the samples left over go to the
    classes with the largest remainders (ties: lower label first). The result is
    sorted. Only `rng` is used, in a fixed order, so a seed gives the same choice on
    every platform and in every process.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 <= n_pick <= n:
        raise ValueError(f"cannot pick {n_pick} of {n} samples")
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    take_n = n_pick * counts // max(n, 1)
    remainder = n_pick * counts % max(n, 1)
    extra = int(n_pick - take_n.sum())
    order = np.lexsort((np.arange(len(classes)), -remainder))
    take_n[order[:extra]] += 1
    picked = [rng.permutation(np.flatnonzero(inverse == c))[: take_n[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def complement(n: int, index: np.ndarray) -> np.ndarray:
    """Sorted indices of 0..n-1 that are not in `index`."""
    mask = np.ones(n, dtype=bool)
    mask[index] = False
    return np.flatnonzero(mask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it to `path`.

    A reader never sees a half-written file: either the old file or the new one.
    On any error the temporary file is removed and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_seed(seed: object) -> int:
    """The seed as an int, or DataError when it is not a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"--seed/seed must be a non-negative integer, got {seed!r}")
    return int(seed)
