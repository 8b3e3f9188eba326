"""Downloading the official data files with pooch: mirrors, checksums, cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._core import DataError, log


class Offline(DataError):
    """No mirror of a file could be reached (the message says where to put it by hand)."""


@dataclass(frozen=True)
class Remote:
    """One file of a built-in data set: its name in the cache, where to get it, its MD5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


# torchvision's first MNIST mirror, then the CVDF copy on Google Cloud Storage (the
# original host, yann.lecun.com, now refuses automated downloads).
_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)

#: The files of each downloadable data set, in the order the parser expects them.
#: Tests (and users behind a local mirror) may replace the entries.
REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": tuple(
        Remote(name, tuple(base + name for base in _MNIST_MIRRORS), md5)
        for name, md5 in _MNIST_FILES
    ),
    "cifar10": (
        Remote(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "c58f30108f718f92721af3b95e74349a",
        ),
    ),
    "stl10": (
        Remote(
            "stl10_binary.tar.gz",
            (
                "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                "https://cs.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            ),
            "91f7769df0f17e558f3565bffb0c7dfb",
        ),
    ),
}

#: Seconds without an answer before a mirror counts as unreachable.
TIMEOUT = 30


def fetch(remote: Remote, folder: Path) -> Path:
    """Path of `remote` in `folder`, downloaded first if it is absent or damaged.

    pooch does the work: it checks the MD5 of a file already in the cache, downloads
    into a temporary file beside the target, verifies it and only then renames it,
    so the cache never holds a partial or unverified file. The mirrors are tried in
    order; when all fail, DataError says what happened and where the file can be
    put by hand.
    """
    import pooch
    import requests

    folder = Path(folder)
    target = folder / remote.filename
    known = f"md5:{remote.md5}"
    network: list[str] = []
    mismatch: list[str] = []
    for url in remote.urls:
        downloader = pooch.HTTPDownloader(progressbar=True, chunk_size=1 << 20, timeout=TIMEOUT)
        try:
            return Path(
                pooch.retrieve(
                    url, known_hash=known, fname=remote.filename, path=folder, downloader=downloader
                )
            )
        except requests.exceptions.RequestException as exc:
            network.append(f"{url} ({_reason(exc)})")
            log.warning("could not download %s from %s: %s", remote.filename, url, _reason(exc))
        except ValueError as exc:  # pooch: the downloaded file's hash is not the known one
            got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
            mismatch.append(f"{url} gave md5 {got.group(1) if got else 'of another file'}")
            log.warning("checksum mismatch for %s from %s; download deleted", remote.filename, url)
        except OSError as exc:
            raise DataError(
                f"cannot write {target} ({exc.strerror or exc}); choose a writable data folder "
                f"with --data-dir or SGD_INFLUENCE_DATA"
            ) from None
    if mismatch:
        others = f"; other mirrors failed: {', '.join(network)}" if network else ""
        raise DataError(
            f"checksum mismatch for {remote.filename}: {'; '.join(mismatch)}, expected md5 "
            f"{remote.md5}; the download was deleted, nothing was cached in {folder}{others}"
        )
    present = ""
    if target.exists():
        present = f" (the file there now has md5 {pooch.file_hash(str(target), alg='md5')})"
    raise Offline(
        f"cannot download {remote.filename}: tried {', '.join(network)}; without network, put "
        f"the file by hand at {target} (md5 {remote.md5}){present}"
    )


def _reason(exc: Exception) -> str:
    """A few words on why a request failed."""
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    return type(exc).__name__
