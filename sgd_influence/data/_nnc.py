"""Neural Network Console CSV data sets: reading (with a decode cache) and exporting."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ._core import (
    DataError,
    DataSet,
    Split,
    atomic_write,
    check_seed,
    complement,
    log,
    stratified_pick,
    take,
)

CACHE_SUFFIX = ".cache.npz"
_CACHE_FORMAT = "sgd_influence.data csv v2"
_DIGEST_FORMAT = "sgd_influence.data csv content v1"
_MARKER = ".sgd_influence_dataset"
# Labels reach the network as float32, which holds every integer below 2**24 exactly (and
# a label that large would already ask for millions of output units): larger ones are refused.
MAX_LABEL = 2**24 - 1


def _progress(total: int, desc: str, unit: str):
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent in logs and pipes.
    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False)


# ------------------------------------------------------------------------------ reading


def _parse_csv(csv_path: Path, raw: bytes) -> tuple[list[str], list[int], list[int]]:
    """Image paths, labels and line numbers of the data rows of an NNC CSV."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 text file; expected a CSV with header 'x:image,y:label'") from None
    reader = csv.reader(io.StringIO(text))
    header = None
    paths: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    xi = yi = -1
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            xi = _column(header, "x")
            yi = _column(header, "y")
            if xi < 0 or yi < 0:
                raise DataError(
                    f"{csv_path}: header {','.join(header)!r} lacks an 'x:' image column or a "
                    f"'y:' label column; expected a header like 'x:image,y:label'"
                )
            continue
        line = reader.line_num
        if len(row) <= max(xi, yi):
            raise DataError(f"{csv_path} line {line}: {len(row)} columns, expected {len(header)}")
        path = row[xi].strip()
        if not path:
            raise DataError(f"{csv_path} line {line}: empty image path in column {header[xi]!r}")
        paths.append(path)
        labels.append(_label(row[yi], csv_path, line))
        lines.append(line)
    if header is None:
        raise DataError(f"{csv_path}: empty CSV; expected a header 'x:image,y:label' and one row per image")
    if not paths:
        raise DataError(f"{csv_path}: no data rows below the header; expected one row per image")
    return paths, labels, lines


def _column(header: list[str], var: str) -> int:
    for i, name in enumerate(header):
        if name == var or name.startswith(var + ":"):
            return i
    return -1


def _label(cell: str, csv_path: Path, line: int) -> int:
    text = cell.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = float("nan")
        if not (np.isfinite(as_float) and as_float.is_integer()):
            raise DataError(
                f"{csv_path} line {line}: label {text!r} is not an integer; expected a class index 0, 1, 2, ..."
            ) from None
        value = int(as_float)
    if value < 0:
        raise DataError(f"{csv_path} line {line}: label {value} is negative; expected a class index 0, 1, 2, ...")
    if value > MAX_LABEL:
        raise DataError(
            f"{csv_path} line {line}: label {text!r} is too large; expected a class index 0, 1, 2, ... "
            f"up to {MAX_LABEL}"
        )
    return value


def _to_array(image) -> np.ndarray:
    """A PIL image as uint8 (C, H, W): grayscale stays 1 channel, the rest becomes RGB.

    Transparent images (RGBA, LA, palette with transparency) are composited over
    black, which for a fully opaque image is the same as dropping the alpha channel.
    """
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("L", "RGB"):
        arr = np.asarray(image, dtype=np.uint8)
    elif mode == "1":
        arr = np.asarray(image.convert("L"), dtype=np.uint8)
    elif mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        target = "LA" if mode in ("LA", "La") else "RGBA"
        arr = np.asarray(image.convert(target), dtype=np.uint16)
        color, alpha = arr[..., :-1], arr[..., -1:]
        arr = ((color * alpha + 127) // 255).astype(np.uint8)
    elif mode.startswith("I"):  # 16-bit (or 32-bit) grayscale: scale 0..65535 to 0..255
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        arr = ((wide * 255 + 32767) // 65535).astype(np.uint8)
    elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    else:
        raise ValueError(f"image mode {mode} is not supported (expected grayscale or color)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read_csv_bytes(csv_path: Path) -> bytes:
    try:
        return csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{csv_path}: CSV file not found") from None
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read the CSV ({exc.strerror or exc})") from None


def _content_digest(csv_path: Path, raw: bytes, files: list[Path], paths: list[str], lines: list[int]) -> str:
    digest = hashlib.sha256(f"{_DIGEST_FORMAT}\n{len(raw)}\n".encode() + raw)
    for file, path, line in zip(files, paths, lines, strict=True):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise _image_error(csv_path, line, path, file, exc) from None
        _check_size(csv_path, line, path, file, data)
        digest.update(f"\n{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def _image_error(csv_path: Path, line: int, path: str, file: Path, exc: OSError) -> DataError:
    """The one-line error for an image file of the CSV that cannot be opened."""
    where = f"{csv_path} line {line}: image path {path!r}"
    if isinstance(exc, IsADirectoryError) or file.is_dir():
        return DataError(f"{where} is a folder, not an image file ({file}); expected the path of an image file")
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{csv_path} line {line}: image file {path!r} not found (looked for {file})")
    return DataError(f"{where}: cannot read {file} ({exc.strerror or exc}); expected a readable image file")


_PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header; None for another format."""
    if data[:8] != _PNG or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_size(csv_path: Path, line: int, path: str, file: Path, data: bytes) -> None:
    """Refuse, before any task starts, an image Pillow would refuse to decode as a possible
    decompression bomb (Image.MAX_IMAGE_PIXELS; its header only, and a PNG of an ordinary
    size is not even opened)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None:
        return
    size = _png_size(data)
    if size is not None and size[0] * size[1] <= Image.MAX_IMAGE_PIXELS:
        return
    try:
        with warnings.catch_warnings():  # between the two limits: decoded later, with Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data)).close()
    except Image.DecompressionBombError as exc:
        raise _too_large(csv_path, line, path, file, exc, size) from None
    except Exception:  # an unreadable image is reported where it is decoded
        pass


def _too_large(csv_path: Path, line: int, path: str, file: Path, exc: Exception,
               size: tuple[int, int] | None = None) -> DataError:
    shown = f" is {size[0]}x{size[1]} pixels:" if size else ""
    return DataError(f"{csv_path} line {line}: image {path!r}{shown} too large to decode ({exc}) ({file}); "
                     "expected images of a size to train on: resize it")


def csv_digest(csv_path: str | os.PathLike) -> str:
    """SHA-256 of an NNC CSV data set's content: the CSV's bytes and every image's bytes.

    The path of the CSV and the files' times do not enter: the same data anywhere (and
    under any spelling of its path) has the same digest, other data another one.
    """
    csv_path = Path(csv_path)
    raw = _read_csv_bytes(csv_path)
    paths, _labels, lines = _parse_csv(csv_path, raw)
    files = [csv_path.parent / p for p in paths]
    return _content_digest(csv_path, raw, files, paths, lines)


def read_csv_split(csv_path: str | os.PathLike, digest: str | None = None) -> Split:
    """The images and labels listed by an NNC CSV ('x:' image column, 'y:' label column).

    Image paths are relative to the CSV's folder (absolute paths are allowed). The
    decoded images are cached in '<csv name>.cache.npz' beside it, keyed by the CSV's
    content digest (:func:`csv_digest`; pass ``digest`` when already known, so the
    files are hashed once per run); when that folder is not writable the cache is
    skipped with a warning.
    """
    csv_path = Path(csv_path)
    raw = _read_csv_bytes(csv_path)
    paths, labels, lines = _parse_csv(csv_path, raw)
    base = csv_path.parent
    files = [base / p for p in paths]
    if digest is None:
        digest = _content_digest(csv_path, raw, files, paths, lines)
    key = hashlib.sha256(f"{_CACHE_FORMAT}\n{digest}".encode()).hexdigest()
    cache = csv_path.with_name(csv_path.name + CACHE_SUFFIX)
    images = _cached_images(cache, key, len(paths))
    if images is None:
        images = _decode_all(csv_path, files, paths, lines)
        try:
            with atomic_write(cache) as f:
                np.savez(f, key=np.array(key), images=images)
        except OSError as exc:
            log.warning("cannot write the decode cache %s (%s); continuing without it", cache, exc)
    return Split(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        rows=np.arange(len(paths), dtype=np.int64),
        paths=tuple(paths),
    )


def _cached_images(cache: Path, key: str, n: int) -> np.ndarray | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) != key:
                log.info("decode cache %s is stale; decoding again", cache)
                return None
            images = z["images"]
    except Exception as exc:
        log.warning("ignoring unreadable decode cache %s (%s)", cache, exc)
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n:
        return None
    return images


def _decode_all(csv_path: Path, files: list[Path], paths: list[str], lines: list[int]) -> np.ndarray:
    from PIL import Image

    log.info("decoding %d images listed in %s", len(files), csv_path)
    images = None
    with _progress(len(files), f"decoding {csv_path.name}", "img") as bar:
        for i, (file, path, line) in enumerate(zip(files, paths, lines, strict=True)):
            try:
                with Image.open(file) as img:
                    arr = _to_array(img)
            except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
                raise _image_error(csv_path, line, path, file, exc) from None
            except Image.DecompressionBombError as exc:
                raise _too_large(csv_path, line, path, file, exc) from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataError(f"{csv_path} line {line}: cannot read image {path!r} ({exc})") from None
            if images is None:
                images = np.empty((len(files),) + arr.shape, dtype=np.uint8)
            elif arr.shape != images.shape[1:]:
                raise DataError(
                    f"{csv_path} line {line}: image {path!r} is {_shape(arr.shape)} but the first "
                    f"image is {_shape(images.shape[1:])}; all images must have one size and channel count"
                )
            images[i] = arr
            bar.update()
    return images


def _shape(chw: tuple[int, ...]) -> str:
    c, h, w = chw
    return f"{h}x{w} with {c} channel{'s' if c > 1 else ''}"


def load_csv_dataset(
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    val_csv: str | os.PathLike | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    digests: tuple[str, str, str] | None = None,
) -> DataSet:
    """The user's own data set from NNC CSVs.

    Without `val_csv`, a stratified share `val_fraction` of train_csv, chosen by
    `seed`, becomes the validation split; both splits keep the row numbers and
    paths of train_csv, so the influence file's datasource_index refers to its rows.
    `digests`: the content digests (:func:`csv_digest`) of train, validation ('' when
    none) and test CSV, when already computed. The labels are checked by
    :func:`check_csv_labels` (errors only; the warnings are the caller's).
    """
    seed = check_seed(seed)
    d_train, d_val, d_test = digests if digests else (None, None, None)
    check_csv_labels(train_csv, test_csv, val_csv, warn=False)
    full = read_csv_split(train_csv, d_train)
    test = read_csv_split(test_csv, d_test)
    if val_csv is not None:
        train, val = full, read_csv_split(val_csv, d_val or None)
    else:
        if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
            raise DataError(f"--val-fraction/val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
        n = len(full)
        if n < 2:
            raise DataError(f"{train_csv}: {n} row cannot be split into train and validation; give a validation CSV")
        n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
        val_idx = stratified_pick(full.labels, n_val, np.random.default_rng(seed))
        train, val = take(full, complement(n, val_idx)), take(full, val_idx)
    for where, split in ((val_csv, val), (test_csv, test)):
        if where is not None and split.images.shape[1:] != train.images.shape[1:]:
            raise DataError(
                f"{where}: images are {_shape(split.images.shape[1:])} but those of {train_csv} are "
                f"{_shape(train.images.shape[1:])}; all splits must have one size and channel count"
            )
    num_classes = int(max(s.labels.max() for s in (train, val, test) if len(s)) + 1)
    return DataSet(name="csv", train=train, val=val, test=test, num_classes=num_classes)


def check_csv_labels(
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    val_csv: str | os.PathLike | None = None,
    warn: bool = True,
) -> list[int]:
    """Check the class indices of a CSV data set (reads the CSVs only, no image).

    The number of classes is the largest label + 1. A label that makes it larger than
    the number of samples of the three CSVs is refused (one line naming the CSV row),
    as is a training CSV with one class only (nothing to learn). Classes below the
    largest label that no training row has are returned (and logged as a warning when
    `warn`): the network still gets an output for each.
    """
    parsed = []
    for where in (train_csv, val_csv, test_csv):
        if where is not None:
            path = Path(where)
            _paths, labels, lines = _parse_csv(path, _read_csv_bytes(path))
            parsed.append((path, np.asarray(labels, np.int64), lines))
    n_total = sum(len(labels) for _p, labels, _l in parsed)
    for path, labels, lines in parsed:
        i = int(np.argmax(labels))
        if labels[i] >= n_total:
            raise DataError(
                f"{path} line {lines[i]}: label {labels[i]} would make {labels[i] + 1} classes for "
                f"{n_total} samples; expected class indices 0, 1, 2, ... numbered without gaps"
            )
    train_path, train_labels, _ = parsed[0]
    present = np.unique(train_labels)
    if len(present) < 2:
        raise DataError(
            f"{train_path}: every training row has label {present[0]}; expected at least two classes "
            "(one class leaves nothing to learn)"
        )
    num_classes = int(max(labels.max() for _p, labels, _l in parsed)) + 1
    missing = sorted(set(range(num_classes)) - set(present.tolist()))
    if missing and warn:
        shown = ", ".join(str(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
        log.warning(
            "%s: no training row has label %s (labels run 0..%d); the network still gets %d outputs. "
            "If those classes do not exist, number the labels 0..K-1 without gaps",
            train_path, shown, num_classes - 1, num_classes,
        )
    return missing


# ---------------------------------------------------------------------------- exporting


def export_csv(ds: DataSet, out_dir: str | os.PathLike, seed: int) -> dict[str, Path]:
    """Write `ds` as PNG files plus train_{seed}.csv, val_{seed}.csv and test.csv.

    Every image goes to out_dir/<its path in the Split>, so the CSVs list the very
    paths the Split carries; an image file already there is not written again
    (which makes a second export, or the export of another seed, cheap). Each file
    is written under a temporary name and renamed. Returns the CSV paths under the
    keys 'train', 'val' and 'test'. The CSV rows are numbered 0..N-1 in split order.
    """
    seed = check_seed(seed)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _claim(out, ds.name)
    except OSError as exc:
        raise DataError(f"--export-csv: cannot write to {out} ({exc.strerror or exc})") from None
    splits = {"train": ds.train, "val": ds.val, "test": ds.test}
    todo: dict[str, np.ndarray] = {}
    for split in splits.values():
        for path, image in zip(split.paths, split.images, strict=True):
            if path not in todo:
                todo[path] = image
    write_pngs(todo, out, ds.name)
    result = {}
    for part, split in splits.items():
        csv_path = out / (f"{part}_{seed}.csv" if part != "test" else "test.csv")
        with atomic_write(csv_path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["x:image", "y:label"])
            writer.writerows(zip(split.paths, split.labels.tolist(), strict=True))
        result[part] = csv_path
    return result


def write_pngs(images: dict[str, np.ndarray], out: Path, name: str, atomic: bool = True) -> int:
    """Write each uint8 (C, H, W) image of ``images`` to out/<its relative path> as PNG.

    An image file already there is not written again; each file is written under a
    temporary name and renamed (``atomic=False``: directly, for a folder that is itself
    renamed into place when complete). Returns the number of files written.
    """
    from PIL import Image

    todo = {}
    for path, image in images.items():
        pure = PurePosixPath(path.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise DataError(f"cannot export image path {path!r}: expected a relative path below {out}")
        target = out / pure
        if not target.exists():
            todo[target] = image
    if todo:
        log.info("writing %d PNG files to %s", len(todo), out)
    with _progress(len(todo), f"writing {name} PNGs", "img") as bar:
        for target, image in todo.items():
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            pil = Image.fromarray(np.ascontiguousarray(pixels))  # uint8: mode L or RGB
            if atomic:
                with atomic_write(target) as f:
                    pil.save(f, format="PNG")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                pil.save(target, format="PNG")
            bar.update()
    return len(todo)


def _claim(out: Path, name: str) -> None:
    """Mark `out` as holding data set `name`; refuse a folder that holds another one."""
    marker = out / _MARKER
    if marker.is_file():
        held = marker.read_text(encoding="utf-8").strip()
        if held and held != name:
            raise DataError(f"--export-csv: {out} already holds the data set {held!r}, not {name!r}; choose another folder")
        return
    with atomic_write(marker, "w") as f:
        f.write(name + "\n")
