"""The view's links into the store, or copies where links cannot be made.

A view (``OUT/train``, ``OUT/influence/{method}``, ``OUT/score/{name}``) is a relative
symbolic link to a store entry. Where the file system has no symbolic links (or
``$SGD_INFLUENCE_VIEW=copy`` asks for copies), a view is a real folder holding a copy of
its entry, marked by COPY_MARK (the entry's path relative to the view's folder, as a
link would hold). Tasks write into the copy; :func:`write_back` brings what they wrote
into the entry (when the folder's lock is taken and released, and before the view
changes), so the store stays whole.
"""

from __future__ import annotations

import errno
import filecmp
import logging
import os
import shutil
from pathlib import Path

from . import fileio

logger = logging.getLogger(__name__)

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
