"""Image files of training samples: what an influence file's x:image points to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._builtin import BUILTIN, ensure_images, image_folder, restore_images


def training_image_files(dataset: str, paths, data_dir: str | os.PathLike | None = None,
                         train_csv: str | os.PathLike | None = None) -> list[str]:
    """Absolute paths of existing image files for the training samples' ``paths``.

    ``paths`` are the Split's paths (relative to the CSV they come from). For the data
    set 'csv' they are resolved against ``train_csv``'s folder (an absolute path stays);
    for a built-in set its PNG files are written once (``ensure_images``) and the paths
    point into that folder.
    """
    if dataset == "csv":
        if train_csv is None:
            raise ValueError("the data set 'csv' needs --train-csv to resolve its image paths")
        base = Path(train_csv).expanduser().resolve().parent
    elif dataset in BUILTIN:
        base = ensure_images(dataset, data_dir).resolve()
    else:
        raise ValueError(f"unknown data set {dataset!r}")
    files = [str(base / p) for p in paths]  # an absolute p replaces base
    if dataset in BUILTIN:
        missing = [p for p, f in zip(paths, files) if not os.path.exists(f)]
        if missing:  # deleted since they were written: write them again
            restore_images(dataset, data_dir, missing)
    return files


def image_file_check(dataset: str, data_dir=None, train_csv=None):
    """A test ``f -> bool``: is ``f`` an image file of the data set where it is now (the
    training CSV's images, or the built-in set's PNG folder)?"""
    if dataset == "csv":
        from ._nnc import _parse_csv, _read_csv_bytes

        csv_path = Path(train_csv).expanduser().resolve()
        names, _labels, _lines = _parse_csv(csv_path, _read_csv_bytes(csv_path))
        files = {str(csv_path.parent / p) for p in names}
        return lambda f: f in files and os.path.isfile(f)
    root = str(image_folder(dataset, data_dir).resolve()) + os.sep
    return lambda f: f.startswith(root) and os.path.isfile(f)


@dataclass(frozen=True)
class ImageSource:
    """Where a data set's images are stored as files (see :func:`training_image_files`)."""

    dataset: str
    data_dir: str | None = None
    train_csv: str | None = None

    def training_files(self, paths) -> list[str]:
        return training_image_files(self.dataset, paths, self.data_dir, self.train_csv)
