"""The result store: every result kept under a key made from what it depends on.

An output folder keeps its results in entries::

    OUT/store/train/{key}/                  the training runs (seed_{s}/ each) of one identity
    OUT/store/influence/{method}/{key}/     one method's influence files (influence_{s}.csv)
    OUT/store/score/{name}/{key}/           one method's (or the noise floor's) retrain scores

``key`` is a digest of the entry's identity: exactly the settings its results depend on
(the data's and the network's content, the training settings, the method's own settings,
the evaluation settings), saved beside them as ``config.json``. A setting changed in the
same folder opens other entries and leaves every existing one as it is; changed back, it
finds its results again. The files of an entry are each written atomically with their
checksum by the task that makes them, and reused when they read back whole.

The folders a user and the reference code read (``OUT/train``, ``OUT/influence/{method}``,
``OUT/score/{name}``) are symbolic links to the current configuration's entries (see
:mod:`sgd_influence.view`); results of an earlier version of this program, written in
those folders themselves, are moved aside to ``OUT/older-version/`` and computed again.
The links (or, where the file system has none, copies) are made by :mod:`.links`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import fileio, links

logger = logging.getLogger(__name__)

ROOT = "store"
KINDS = ("train", "influence", "score")
IDENTITY = "config.json"
OLDER = "older-version"


def key(identity: dict) -> str:
    """The key of an identity: 16 hex digits of the sha256 of its canonical JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kind_root(out, kind: str, name: str | None = None) -> Path:
    """``OUT/store/train``, or ``OUT/store/{kind}/{name}`` for a method's (floor's) entries."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of result {kind!r}")
    root = Path(out) / ROOT / kind
    return root if kind == "train" else root / name


def entry_dir(out, kind: str, name: str | None, identity: dict) -> Path:
    return kind_root(out, kind, name) / key(identity)


def open_entry(out, kind: str, name: str | None, identity: dict) -> Path:
    """The entry of ``identity``, made (with its saved identity) when absent."""
    path = entry_dir(out, kind, name, identity)
    saved = path / IDENTITY
    if read_identity(saved) != identity:
        path.mkdir(parents=True, exist_ok=True)
        fileio.write_json(saved, identity)
    return path


def read_identity(path) -> dict | None:
    """A saved identity; None when absent or damaged."""
    try:
        saved = fileio.read_json(path)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _result_files(path: Path) -> list[Path]:
    return [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".") and f.name != IDENTITY]


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str | None
    path: Path

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def identity(self) -> dict | None:
        return read_identity(self.path / IDENTITY)

    def results(self) -> list[Path]:
        return _result_files(self.path)

    def size(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def entries(out, kind: str | None = None, name: str | None = None) -> list[Entry]:
    """The entries of ``out`` (of one kind, and one method's or floor's ``name``)."""
    found = []
    for k in KINDS if kind is None else (kind,):
        base = Path(out) / ROOT / k
        if not base.is_dir():
            continue
        if k == "train":
            found += [Entry(k, None, p) for p in sorted(base.iterdir()) if p.is_dir()]
            continue
        for group in sorted(base.iterdir()):
            if group.is_dir() and (name is None or group.name == name):
                found += [Entry(k, group.name, p) for p in sorted(group.iterdir()) if p.is_dir()]
    return found


# --------------------------------------------------------------------------- seeds
def seed_files(entry: Path, kind: str, seed: int) -> list[Path]:
    """The files of trial ``seed`` in an entry (a training run's folder, an influence
    file with its facts, score files), checksums included."""
    entry = Path(entry)
    if kind == "train":
        return [entry / f"seed_{seed}"] if (entry / f"seed_{seed}").exists() else []
    pattern = f"influence_{seed}.*" if kind == "influence" else f"*_seed_{seed}.csv"
    return sorted({*entry.glob(pattern), *entry.glob("." + pattern)})


def clear_seeds(entry: Path, kind: str, seeds) -> int:
    """Remove trial ``seeds``' results of an entry (``--overwrite``); how many removed."""
    removed = 0
    for seed in seeds:
        for f in seed_files(entry, kind, seed):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
            removed += 1
    return removed


def move_older(out, places) -> Path | None:
    """Move results written by an earlier version (real folders and files where this
    version keeps views: ``places``) to ``OUT/older-version/{time}/``; they are not read,
    and the current configuration's results are computed again. Returns that folder."""
    out = Path(out)
    older = [p for p in places if p.exists() and not links.is_view(p)]
    if not older:
        return None
    dest = out / OLDER / time.strftime("%Y%m%d-%H%M%S")
    for p in older:
        target = dest / p.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        p.rename(target)
    logger.warning("%s: results of an earlier version of sgd-influence (%s) moved to %s; they are "
                   "not read, and this configuration's results are computed again", out,
                   ", ".join(str(p.relative_to(out)) for p in older), dest)
    return dest
