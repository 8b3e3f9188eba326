"""Small synthetic data sets for tests (no files, no network)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def make_split(n: int, rng, num_classes: int = 10, side: int = 32, channels: int = 1,
               noise: float = 60.0):
    """Images whose class is a bright horizontal band at a class-dependent height."""
    y = rng.integers(0, num_classes, n)
    x = rng.random((n, channels, side, side)) * noise
    band = max(side // num_classes, 1)
    for i in range(n):
        top = (y[i] * band) % max(side - band, 1)
        x[i, :, top : top + band, :] += 150
    x = np.clip(x, 0, 255).astype(np.uint8)
    return SimpleNamespace(images=x, labels=y.astype(np.int64), rows=np.arange(n, dtype=np.int64),
                           paths=tuple(f"train/{i:05d}.png" for i in range(n)))


def make_dataset(n_train=200, n_val=100, n_test=100, seed=0, num_classes=10, side=32,
                 channels=1, noise=60.0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        name="synthetic",
        train=make_split(n_train, rng, num_classes, side, channels, noise),
        val=make_split(n_val, rng, num_classes, side, channels, noise),
        test=make_split(n_test, rng, num_classes, side, channels, noise),
        num_classes=num_classes,
    )


def mnist5k_subset(n_train: int, n_val: int, n_test: int = 10, seed: int = 0):
    """A seeded random subset of the offline mnist5k splits (classes mixed), as a data set."""
    from sgd_influence.data import load_dataset

    ds = load_dataset("mnist5k", seed)

    def cut(split, n):
        k = np.random.default_rng(np.random.SeedSequence([seed, 0x5B5E7])).permutation(len(split.labels))[:n]
        return SimpleNamespace(images=split.images[k], labels=np.asarray(split.labels)[k],
                               rows=np.arange(len(k), dtype=np.int64),
                               paths=tuple(split.paths[i] for i in k))

    return SimpleNamespace(name="mnist5k", train=cut(ds.train, n_train), val=cut(ds.val, n_val),
                           test=cut(ds.test, n_test), num_classes=ds.num_classes)


def write_csv_split(folder, name: str, n: int, rng, classes: int = 4, side: int = 28):
    """PNGs of a bright band whose height tells the class, plus their NNC CSV
    (``x:image,y:label``, paths relative to the CSV); returns the CSV's path."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    (folder / name).mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, classes, n)
    lines = ["x:image,y:label"]
    for i, y in enumerate(labels):
        img = rng.random((side, side)) * 90
        top = 3 + 6 * int(y)
        img[top : top + 4, :] += 140
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i:04d}.png")
        lines.append(f"{name}/{i:04d}.png,{int(y)}")
    csv = folder / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def write_csv_dataset(folder, sizes=(48, 24, 24), seed: int = 3) -> dict:
    """Training, validation and test CSVs of ``write_csv_split`` images, by split name."""
    rng = np.random.default_rng(seed)
    return {k: write_csv_split(folder, k, n, rng) for k, n in zip(("train", "val", "test"), sizes)}


def small_run_args(csv_data, out, *extra) -> list[str]:
    """Flags of a small whole run on ``write_csv_dataset``'s CSVs (one trial, n = 0 4 8)."""
    return ["-o", str(out), "--train-csv", str(csv_data["train"]), "--val-csv", str(csv_data["val"]),
            "--test-csv", str(csv_data["test"]), "-e", "2", "--batch-size", "16", "--lr", "0.05",
            "-nt", "1", "-r", "0", "4", "8", "--noise-floor-draws", "0", "--jobs", "1", *extra]


def view_files(out, pattern: str = "*") -> dict[str, bytes]:
    """Every file of an output folder's view matching ``pattern`` by its path there (the
    links into the store followed, the store itself left out; hidden files left out)."""
    out = Path(out)
    found = {}
    for root, dirs, files in os.walk(out, followlinks=True):
        if Path(root) == out:
            dirs[:] = [d for d in dirs if d != "store"]
        for name in files:
            p = Path(root) / name
            if not name.startswith(".") and p.match(pattern):
                found[p.relative_to(out).as_posix()] = p.read_bytes()
    return dict(sorted(found.items()))
