"""Atomic file writing: every output is written under a temporary name and renamed.

A failed write (a full disk, a read-only place) raises :class:`WriteError`, one line
naming the file, and leaves no temporary file behind. A file that cannot be read back
(truncated, damaged) raises :class:`DamagedFile`, one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np


class WriteError(OSError):
    """A file could not be written; the message is one line naming it and what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "write failed"


class DamagedFile(ValueError):
    """A finished file cannot be read back (truncated or damaged); one line naming it.

    ``reason`` (when set) is the short cause without the file name and the advice.
    """

    reason: str = ""


_REDO = "run the phase that wrote it again (the same command recomputes it)"


def damaged(path, reason: str, advice: str = _REDO) -> DamagedFile:
    err = DamagedFile(f"{path}: damaged or truncated ({reason}); {advice}")
    err.reason = reason
    return err


def write_error(path, exc: OSError) -> WriteError:
    """The one-line error of a failed write of ``path``."""
    if isinstance(exc, WriteError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space (or choose another -o) and run the same command again; finished files are kept"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a writable -o folder"
    else:
        hint = "check the output folder and run the same command again; finished files are kept"
    err = WriteError(f"{path}: cannot write ({reason}); {hint}")
    err.errno = exc.errno
    return err


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


# temporary names: tmp_name's ('.name.tmpPID') and the data layer's ('.name.PID-hex.tmp')
_TMP = re.compile(r"^\..+\.(tmp\d+|\d+-[0-9a-f]+\.tmp)$")


def is_tmp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file's name (a write not finished)."""
    return bool(_TMP.match(name))


# --------------------------------------------------------------------------- checksums
# Every finished file has a sha256 beside it (".NAME.sha256"), written before the file is
# renamed into place; a file is reused only if its bytes still have that digest.
_CHUNK = 1 << 22


def checksum_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _record_digest(path: Path, digest: str) -> None:
    side = checksum_path(path)
    tmp = tmp_name(side)
    tmp.write_text(digest + "\n")
    os.replace(tmp, side)


def verify(path) -> str | None:
    """None when ``path`` holds the bytes it was written with, else why not.

    A file without its recorded digest is not known to be finished (the digest is
    written before the file is renamed into place): it is not reused."""
    path = Path(path)
    side = checksum_path(path)
    try:
        want = side.read_text().strip()
    except FileNotFoundError:
        return f"its checksum {side.name} is missing (not known to be finished)"
    except OSError as exc:
        return f"its checksum {side.name} is unreadable ({exc.strerror or exc})"
    try:
        got = file_digest(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if got != want:
        return "its bytes changed since it was written (sha256 differs from the one recorded)"
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success only.

    An OSError while writing becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _record_digest(path, file_digest(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, f"{type(exc).__name__}: {exc}") from None


def save_npz(path, **arrays) -> None:
    """Uncompressed .npz, numeric arrays only (read back with allow_pickle=False)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _damaged(path, exc: BaseException) -> DamagedFile:
    return damaged(path, f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def load_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz; a damaged or truncated file raises :class:`DamagedFile`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise _damaged(path, exc) from None


def load_npy(path, mmap_mode: str | None = None) -> np.ndarray:
    """An .npy array (memory-mapped for reading when asked); damage raises :class:`DamagedFile`."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise _damaged(path, exc) from None


def npy_shape(path) -> tuple[int, ...]:
    """Shape in the header of an .npy file whose size matches that header (else DamagedFile)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise _damaged(path, exc) from None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise damaged(path, f"{size} bytes, its header promises {expected}")
    return tuple(int(s) for s in shape)


def write_csv(path, df) -> None:
    """Write a pandas DataFrame atomically (no index column)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


class NpyRowWriter:
    """Write a 2-D float32 .npy file row by row through a file descriptor (no memory map).

    The rows go to a temporary name beside ``path``; :meth:`close` checks that every row
    was written and renames the file onto ``path``. A failed write (a full disk) raises
    :class:`WriteError` naming ``path`` and removes the temporary file; used as a context
    manager any error removes it.
    """

    def __init__(self, path, n_rows: int, n_cols: int):
        self.path = Path(path)
        self.tmp = tmp_name(self.path)
        self.shape = (int(n_rows), int(n_cols))
        self.rows = 0
        self._fd = -1
        self._hash = hashlib.sha256()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": self.shape})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._write(header.getvalue())
        except OSError as exc:
            self.discard()
            raise write_error(self.path, exc) from exc

    def _write(self, data: bytes) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while len(view):
            view = view[os.write(self._fd, view):]

    def write(self, row: np.ndarray) -> None:
        row = np.ascontiguousarray(row, dtype="<f4")
        if row.size != self.shape[1] or self.rows >= self.shape[0]:
            raise ValueError(f"{self.path}: row {self.rows} of size {row.size} does not fit "
                             f"shape {self.shape}")
        try:
            self._write(row.tobytes())
        except OSError as exc:
            self.discard()
            raise write_error(self.path, exc) from exc
        self.rows += 1

    def close(self) -> None:
        if self.rows != self.shape[0]:
            self.discard()
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
        try:
            os.close(self._fd)
            self._fd = -1
            _record_digest(self.path, self._hash.hexdigest())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise write_error(self.path, exc) from exc

    def discard(self) -> None:
        """Close and remove the temporary file (nothing is left behind)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> "NpyRowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
