"""Image files of training samples: what an influence file's x:image points to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._builtin import BUILTIN, ensure_images


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
    return [str(base / p) for p in paths]  # an absolute p replaces base


@dataclass(frozen=True)
class ImageSource:
    """Where a data set's images are stored as files (see :func:`training_image_files`)."""

    dataset: str
    data_dir: str | None = None
    train_csv: str | None = None

    def training_files(self, paths) -> list[str]:
        return training_image_files(self.dataset, paths, self.data_dir, self.train_csv)
