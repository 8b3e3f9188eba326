"""One writer per output folder.

A run holds an exclusive lock on ``OUT/.lock`` (``filelock``, an OS lock released by
the kernel when the process ends, however it ends) for as long as it writes there; the
lock file holds the holder's pid, host and start time, so a second run on the same
folder can say who holds it. With ``--wait`` the second run waits for the first.

Before anything is written, :func:`hold` checks that -o can be a folder and removes the
temporary files that killed runs left behind (with the lock held no other process is
writing there, so every temporary file is stale).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from . import fileio, links

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderBusy(ValueError):
    """Another process holds the output folder; the message names it."""


def check_output(out: str | os.PathLike) -> Path:
    """Create the output folder ``out`` (and its parents); one line naming -o when it cannot be."""
    text = os.fspath(out)
    if not text.strip():
        raise ValueError("-o/--output: expected a folder name, got an empty string")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"-o/--output: {path} is a file, expected a folder; choose another name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"-o/--output: cannot create the folder {path}: {parent} is a file")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"-o/--output: cannot create the folder {path} ({exc.strerror or exc}); "
                         "choose a writable place") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"-o/--output: the folder {path} is not writable; choose a writable place")
    return path


def lock_path(out) -> Path:
    return Path(out) / LOCK_NAME


def holder(out) -> dict:
    """What the lock file says about its holder (empty when it says nothing readable)."""
    try:
        return json.loads(lock_path(out).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    since = info.get("since")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"process {info.get('pid')} on host {info.get('host')}{when}"


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    os.write(fd, (json.dumps(info) + "\n").encode())


@contextlib.contextmanager
def hold(out, wait: bool = False):
    """Hold the lock of the output folder ``out`` for the duration of the block.

    Raises :class:`FolderBusy` (one line naming the holder) when another process holds it,
    unless ``wait`` (then blocks until it is free). Stale temporary files are removed
    once the lock is held, before the caller writes anything.
    """
    folder = check_output(out)
    lock = FileLock(lock_path(folder), on_acquired=_write_holder, fallback_to_soft=False)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = _describe(holder(folder))
            if not wait:
                raise FolderBusy(
                    f"-o/--output: {folder} is in use by {who}; wait for it to finish, run with "
                    "--wait to wait for it, or choose another -o") from None
            logger.info("%s is in use by %s: waiting for it to finish", folder, who)
            lock.acquire()
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise ValueError(f"-o/--output: {folder} is on a file system without file locks; "
                             "choose another place") from None
        raise ValueError(f"-o/--output: cannot lock {lock_path(folder)} ({exc.strerror or exc}); "
                         "choose a writable place") from None
    try:
        remove_temporary_files(folder)
        links.write_back_all(folder)  # what an interrupted run wrote into copy-views
        yield folder
    finally:
        try:
            links.write_back_all(folder)
        finally:
            lock.release()


def remove_temporary_files(out) -> list[Path]:
    """Delete every temporary file under ``out`` (call with the folder's lock held)."""
    removed = []
    for root, _dirs, files in os.walk(out):
        for name in files:
            if fileio.is_tmp_name(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), out)
    return removed
