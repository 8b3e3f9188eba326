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
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import fileio

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


# --------------------------------------------------------------------------- links
# Where the file system has no symbolic links (or ``$SGD_INFLUENCE_VIEW=copy`` asks for
# copies), a view is a real folder holding a copy of its entry, marked by COPY_MARK (the
# entry's path relative to the view's folder, as a link would hold). Tasks write into the
# copy; :func:`write_back` brings what they wrote into the entry (when the folder's lock
# is taken and released, and before the view changes), so the store stays whole.
COPY_MARK = ".view-of"
VIEW_ENV = "SGD_INFLUENCE_VIEW"
_NO_LINKS = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def copies_asked() -> bool:
    """``$SGD_INFLUENCE_VIEW=copy``: views are copies even where links would work."""
    return os.environ.get(VIEW_ENV, "").strip().lower() == "copy"


def is_copy(view: Path) -> bool:
    return Path(view).is_dir() and not Path(view).is_symlink() and (Path(view) / COPY_MARK).is_file()


def is_view(view: Path) -> bool:
    """A link into the store, or a copy of an entry standing for one."""
    return Path(view).is_symlink() or is_copy(view)


def view_target(view: Path) -> str | None:
    """Where a view points, relative to its folder (a link's text; a copy's mark)."""
    view = Path(view)
    if view.is_symlink():
        return os.readlink(view)
    if is_copy(view):
        return (view / COPY_MARK).read_text().strip()
    return None


def view_entry(view: Path) -> Path | None:
    """The entry a view stands for, when it exists."""
    rel = view_target(view)
    if rel is None:
        return None
    entry = (Path(view).parent / rel).resolve()
    return entry if entry.is_dir() else None


def link(view: Path, target: Path | None) -> None:
    """Make ``view`` a relative symbolic link to ``target`` (replaced atomically), or a
    copy of it where links cannot be made; remove the view for None. Only views are
    replaced or removed here (a copy's new files are first written back to its entry)."""
    view = Path(view)
    if target is None:
        if view.is_symlink():
            view.unlink()
        elif is_copy(view):
            write_back(view)
            shutil.rmtree(view)
        return
    rel = os.path.relpath(target, view.parent)
    same = view_target(view) == rel
    if same and (view.is_symlink() or copies_asked()):
        return
    view.parent.mkdir(parents=True, exist_ok=True)
    if not copies_asked():
        tmp = fileio.tmp_name(view)
        try:
            os.symlink(rel, tmp, target_is_directory=True)
            if is_copy(view):
                link(view, None)
            os.replace(tmp, view)
            return
        except OSError as exc:
            if tmp.is_symlink():
                tmp.unlink()
            if exc.errno not in _NO_LINKS:
                raise fileio.write_error(view, exc) from exc
            logger.debug("%s: no symbolic link (%s); the view is a copy", view, exc.strerror or exc)
            if same:
                return  # already a copy of the entry
    _copy_view(view, Path(target), rel)


def _copy_view(view: Path, target: Path, rel: str) -> None:
    tmp = fileio.tmp_name(view)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():
            shutil.copytree(target, tmp, copy_function=shutil.copy2)
        else:  # an entry not made yet (a link would dangle): nothing to copy
            tmp.mkdir()
        (tmp / COPY_MARK).write_text(rel + "\n")
        if view.is_symlink() or is_copy(view):
            link(view, None)
        elif view.exists():
            raise FileExistsError(errno.EEXIST, "a folder that is not a view is in the way", str(view))
        os.replace(tmp, view)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fileio.write_error(view, exc) from exc


def write_back(view: Path) -> int:
    """Copy the files a copy-view holds and its entry lacks (or holds otherwise) into the
    entry, each under a temporary name renamed into place; how many were copied."""
    view = Path(view)
    entry = view_entry(view)
    if entry is None or not is_copy(view):
        return 0
    copied = 0
    for src in sorted(view.rglob("*")):
        if not src.is_file() or src.name == COPY_MARK or fileio.is_tmp_name(src.name):
            continue
        dest = entry / src.relative_to(view)
        if dest.is_file() and filecmp.cmp(src, dest, shallow=True):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = fileio.tmp_name(dest)
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
        copied += 1
    return copied


def write_back_all(out) -> int:
    """:func:`write_back` every copy-view of ``out`` (none where the views are links)."""
    return sum(write_back(v) for v in views(out) if is_copy(v))


def views(out) -> list[Path]:
    """Where the view of ``out`` keeps its links or copies: ``train``, and what
    ``influence/`` and ``score/`` hold (temporary names left out)."""
    out = Path(out)
    found = [out / "train"]
    for phase in ("influence", "score"):
        root = out / phase
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if not p.name.startswith("."))
    return found


def links(folder: Path) -> list[Path]:
    """The views (links, or copies standing for links) directly in ``folder``."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if is_view(p)) if folder.is_dir() else []


def move_older(out, places) -> Path | None:
    """Move results written by an earlier version (real folders and files where this
    version keeps views: ``places``) to ``OUT/older-version/{time}/``; they are not read,
    and the current configuration's results are computed again. Returns that folder."""
    out = Path(out)
    older = [p for p in places if p.exists() and not is_view(p)]
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
