"""Shared setup of the benchmarks: a synthetic data set of a given size and shape, and
the ``--smoke`` flag (the smallest sizes, to check that a benchmark runs) with its small
CSV data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synth import make_dataset  # noqa: E402

from sgd_influence import fileio  # noqa: E402
from sgd_influence.engine import prepare  # noqa: E402


def synthetic(n_train: int, channels: int = 1, side: int = 32, seed: int = 0):
    return prepare(make_dataset(n_train, 64, 64, seed=seed, side=side, channels=channels), seed)


def smoke_csv(folder: Path, n_train: int = 80, n_test: int = 20) -> tuple[Path, Path]:
    """A training and a test CSV (x:image,y:label) of n_train + n_test distinct mnist5k
    digits (a seeded choice; the training rows have every class), as PNG files in
    ``folder``; files already there are kept, so a second call reuses the data set (same
    content, same identity)."""
    from PIL import Image

    from sgd_influence.data import mnist5k_arrays

    images, labels = mnist5k_arrays()
    pick = np.random.default_rng(0).permutation(len(labels))[: n_train + n_test]
    for i in pick:
        if not (folder / f"img/{i}.png").is_file():
            with fileio.atomic_path(folder / f"img/{i}.png") as tmp:
                Image.fromarray(images[i, 0]).save(tmp, format="PNG")
    csvs = []
    for name, part in (("train.csv", pick[:n_train]), ("test.csv", pick[n_train:])):
        text = "x:image,y:label\n" + "".join(f"img/{i}.png,{int(labels[i])}\n" for i in part)
        if not (folder / name).is_file() or (folder / name).read_text() != text:
            fileio.write_text(folder / name, text)
        csvs.append((folder / name).resolve())
    return csvs[0], csvs[1]


def parse_with_smoke(ap: argparse.ArgumentParser, smoke: dict[str, object], argv=None, known: bool = False,
                     also: str = ""):
    """Parse the command line with a ``--smoke`` flag added.

    ``smoke`` maps long flags of ``ap`` to their smallest values; ``--smoke`` makes them
    the defaults, so flags given explicitly still win. ``known``: parse_known_args.
    ``also``: what else --smoke does, for its help text.
    """
    shown = " ".join(f"{flag} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for flag, v in smoke.items())
    ap.add_argument("--smoke", action="store_true",
                    help=f"the smallest sizes ({shown}{also}): checks that the script runs; its numbers "
                         "mean nothing")
    first, _ = ap.parse_known_args(argv)
    if first.smoke:
        ap.set_defaults(**{flag.lstrip("-").replace("-", "_"): v for flag, v in smoke.items()})
    return ap.parse_known_args(argv) if known else ap.parse_args(argv)
