"""Command line: prepare (download, decode, export) and inspect a data set."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from ._builtin import BUILTIN, default_data_dir, load_dataset
from ._core import DataError, DataSet, log
from ._nnc import export_csv, load_csv_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sgd_influence.data",
        description=(
            "Prepare and inspect a data set: download and verify it (built-ins), split it "
            "by the trial seed, print split sizes and class counts, and optionally export "
            "it as PNG files plus Neural Network Console CSVs."
        ),
        epilog=(
            "examples:\n"
            "  python -m sgd_influence.data mnist5k --seed 0 --export-csv out/mnist5k\n"
            "  python -m sgd_influence.data cifar10 --data-dir /data/cache\n"
            "  python -m sgd_influence.data csv --train-csv my/train.csv --test-csv my/test.csv"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help=f"{', '.join(BUILTIN)}, or 'csv' for your own CSV data set")
    parser.add_argument("--seed", type=int, default=0, help="trial seed choosing the validation split (default 0)")
    parser.add_argument(
        "--data-dir",
        help="folder of downloads and decoded caches (default: $SGD_INFLUENCE_DATA, else %(default_dir)s)"
        % {"default_dir": default_data_dir()},
    )
    parser.add_argument("--export-csv", metavar="DIR", help="write PNGs and train_SEED.csv, val_SEED.csv, test.csv here")
    group = parser.add_argument_group("own data set (name 'csv')")
    group.add_argument("--train-csv", help="training CSV (x:image,y:label)")
    group.add_argument("--val-csv", help="validation CSV (default: a seeded share of the training CSV)")
    group.add_argument("--test-csv", help="test CSV")
    group.add_argument("--val-fraction", type=float, default=0.2, help="validation share without --val-csv (default 0.2)")
    return parser


def summary(ds: DataSet, seed: int) -> str:
    """Split sizes, image shape and class counts as a small table."""
    c, h, w = ds.train.images.shape[1:]
    lines = [f"{ds.name}, seed {seed}: {ds.num_classes} classes, images {h}x{w}, {c} channel{'s' if c > 1 else ''}"]
    lines.append(f"{'split':<6}{'size':>7}  class counts (0..{ds.num_classes - 1})")
    for part in ("train", "val", "test"):
        split = getattr(ds, part)
        counts = np.bincount(split.labels, minlength=ds.num_classes)
        lines.append(f"{part:<6}{len(split):>7}  {' '.join(str(n) for n in counts)}")
    return "\n".join(lines)


_RUN_MARKS = ("config.json", ".lock", "train", "influence", "score")


def _refuse_run_folder(folder) -> None:
    """A pipeline run's output folder is not a place to export a data set into."""
    from pathlib import Path

    marks = [m for m in _RUN_MARKS if (Path(folder).expanduser() / m).exists()]
    if marks:
        raise DataError(f"--export-csv: {folder} is a run's output folder (it holds {marks[0]}); "
                        "export into another folder")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        own = (args.train_csv, args.val_csv, args.test_csv)
        if args.name == "csv":
            if args.train_csv is None or args.test_csv is None:
                raise DataError("data set 'csv' needs --train-csv and --test-csv")
            ds = load_csv_dataset(args.train_csv, args.test_csv, args.val_csv, args.seed, args.val_fraction)
        else:
            if any(p is not None for p in own):
                raise DataError(f"--train-csv/--val-csv/--test-csv apply to the data set 'csv', not {args.name!r}")
            ds = load_dataset(args.name, args.seed, args.data_dir)
        if args.export_csv:
            _refuse_run_folder(args.export_csv)
        print(summary(ds, args.seed))
        if args.export_csv:
            written = export_csv(ds, args.export_csv, args.seed)
            for part, path in written.items():
                print(f"{part} csv: {path}")
    except DataError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
