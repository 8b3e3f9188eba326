"""The current configuration's view of the result store.

Every command that has a configuration first points the folders a user (and the reference
code) reads at the store's entries of that configuration (:mod:`sgd_influence.store`)::

    OUT/train               -> store/train/{key of the training run}
    OUT/influence/{method}  -> store/influence/{method}/{key: training run + method settings}
    OUT/score/{method}      -> store/score/{method}/{key: influence key + evaluation settings}
    OUT/score/noise_floor   -> store/score/noise_floor/{key: training run + evaluation}

A method's entries are linked when they hold results or when this command computes them.
The results of another influence window of the same training run and method settings are
linked beside them, labelled with their window (``influence/Hara@last2``), so an analysis
shows them too. Nothing is claimed, refused or wiped: another setting opens other entries.
``--overwrite`` removes the current entries' results of the phases and seeds a command
runs, so that they are computed again.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from . import config as C
from . import links, paths, store
from . import methods as M
from .validation import field_flag

logger = logging.getLogger(__name__)

WINDOW = "infl_epochs"


def influence_identity(cfg: C.Config, method: str) -> dict:
    """What ``method``'s influence files depend on: the training run and its own settings."""
    return {**cfg.train_identity(), **M.get(method).settings(cfg)}


def score_identity(cfg: C.Config, method: str | None) -> dict:
    """What ``method``'s retrain scores depend on (None: the noise floor's, the training
    run only). A retrain replays the influence window (unless -ra), so the window is part
    of every method's scores, Random's and the floor's too."""
    base = cfg.train_identity() if method is None else influence_identity(cfg, method)
    window = {} if cfg.retrain_all else {WINDOW: cfg.infl_epochs}
    return {**base, **window, **cfg.identity("eval")}


def _floor_name(method: str | None) -> str:
    return paths.FLOOR_FOLDER if method is None else method


def point(cfg: C.Config, phases=(), seeds=()) -> None:
    """Link ``cfg``'s view; the entries of the ``phases`` this command runs are made, and
    with ``--overwrite`` their results of ``seeds`` removed first."""
    out = Path(cfg.output)
    methods = M.names()
    inf_root, score_root = paths.phase_root(out, "influence"), paths.phase_root(out, "score")
    links.write_back_all(out)  # a copy-view's new files reach the store before it changes
    store.move_older(out, links.views(out))

    trained = cfg.train_identity()
    train = store.entry_dir(out, "train", None, trained)
    if "train" in phases or train.is_dir():
        train = store.open_entry(out, "train", None, trained)
        _overwrite(cfg, train, "train", "train" in phases, seeds)
    links.link(paths.phase_root(out, "train"), train)  # dangling until the training runs

    wanted: dict[Path, Path] = {}
    for m in methods:
        ident = influence_identity(cfg, m)
        _view(cfg, out, "influence", m, ident, m in cfg.methods and "infl" in phases, seeds, wanted)
    for m in (*methods, None):
        runs = cfg.noise_floor_draws > 0 if m is None else m in cfg.methods
        make = "eval" in phases and runs
        _view(cfg, out, "score", _floor_name(m), score_identity(cfg, m), make, seeds, wanted)
    for root in (inf_root, score_root):
        for p in links.links(root):
            if p not in wanted:
                links.link(p, None)
    for view, target in wanted.items():
        links.link(view, target)


def _overwrite(cfg: C.Config, entry: Path, kind: str, runs: bool, seeds) -> None:
    if cfg.overwrite and runs:
        n = store.clear_seeds(entry, kind, seeds)
        if n:
            logger.info("--overwrite: %d result(s) of seed(s) %s removed from %s, to be computed again",
                        n, " ".join(map(str, seeds)), entry)


def _view(cfg, out: Path, kind: str, name: str, ident: dict, make: bool, seeds,
          wanted: dict) -> None:
    """The links of one method's (or the floor's) results: the current window's entry,
    and its other windows' beside it."""
    root = paths.phase_root(out, kind)
    entry = store.entry_dir(out, kind, name, ident)
    if make:
        entry = store.open_entry(out, kind, name, ident)
        _overwrite(cfg, entry, kind, True, seeds)
    if make or (entry.is_dir() and store.Entry(kind, name, entry).results()):
        wanted[root / name] = entry
    if WINDOW not in ident:
        return
    for other in store.entries(out, kind, name):
        saved = other.identity
        if (other.path != entry and saved is not None and saved.get(WINDOW) is not None
                and saved[WINDOW] != ident[WINDOW] and {**saved, WINDOW: ident[WINDOW]} == ident
                and other.results()):
            wanted[root / paths.variant(name, paths.window_tag(saved[WINDOW]))] = other.path


def links_now(out) -> dict[Path, str]:
    """Every link of the view and where it points (for :func:`restore`)."""
    return {v: links.view_target(v) for v in links.views(Path(out)) if links.is_view(v)}


def restore(out, saved: dict[Path, str], entries: set[Path]) -> None:
    """The view as :func:`links_now` saw it; entries made since (not among ``entries``)
    are removed while they hold no results."""
    for e in store.entries(out):
        if e.path not in entries and not e.results():
            shutil.rmtree(e.path)
    for v in links_now(out):
        if v not in saved:
            links.link(v, None)
    for v, target in saved.items():
        links.link(v, v.parent / target)


# --------------------------------------------------------------------------- messages
def _differing(a: dict, b: dict) -> list[str]:
    """The keys whose values differ between two identities (a key left out: None)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def describe_diff(old: dict, new: dict) -> str:
    """'flag: old -> new, ...' for the keys whose values differ (digests named, not shown)."""
    parts = []
    for k in _differing(old, new):
        if k == "data_digest":
            parts.append("data_digest: the content of the CSV data set changed")
        else:
            parts.append(f"{field_flag(C.Config, k)}: {old.get(k)!r} -> {new.get(k)!r}")
    return ", ".join(parts)


def _show(v) -> str:
    return " ".join(str(x) for x in v) if isinstance(v, list) else str(v)


def other_settings(out, kind: str, name: str | None, identity: dict, has) -> str:
    """Where the store holds results ``has(entry_path)`` of other settings than
    ``identity``: '; the store holds them for <the closest entry's differing flags>'
    (empty when it holds none), for the line that says a result is missing."""
    found = []
    for e in store.entries(out, kind, name):
        saved = e.identity
        if saved is None or saved == identity or not has(e.path):
            continue
        found.append((_differing(saved, identity), saved))
    if not found:
        return ""
    fewest = min(len(diff) for diff, _ in found)
    closest = [(diff, saved) for diff, saved in found if len(diff) == fewest]
    parts = []
    for k in sorted({k for diff, _ in closest for k in diff}):
        if k == "data_digest":
            parts.append("a CSV data set of other content")
            continue
        held = sorted({_show(saved.get(k)) for _, saved in closest}, key=str)
        parts.append(f"{field_flag(C.Config, k)} {' or '.join(held)} (given: {_show(identity.get(k))})")
    return f"; {out} holds them for other settings: {'; '.join(parts)}"


# --------------------------------------------------------------------------- listing
def linked(out) -> dict[Path, str]:
    """The store entries the view links: entry folder -> the view's name for it."""
    out = Path(out)
    found = {}
    for v in links.views(out):
        entry = links.view_entry(v)
        if entry is not None:
            found[entry] = str(v.relative_to(out))
    return found


def describe_entry(out, entry: store.Entry, shown: str | None) -> str:
    """One line of ``sgd-influence store list``: the entry, its view, trials, size, and
    its settings against those of the entry the view links now for the same results."""
    out = Path(out)
    files = entry.results()
    if entry.kind == "train":
        seeds = sorted({p.relative_to(entry.path).parts[0] for p in files if p.name == "record.npz"})
    else:
        seeds = sorted({m.group(1) for p in files if (m := _SEED.search(p.name))}, key=int)
        seeds = [f"seed_{s}" for s in seeds]
    current = _current(out, entry)
    now = None if current is None else store.read_identity(current / store.IDENTITY)
    held = entry.identity
    if shown is not None and current is not None and current.resolve() == entry.path.resolve():
        diff = "current"
    elif now is None or held is None:
        diff = "-"
    else:
        diff = describe_diff(now, held) or "same"
    trials = ",".join(s.removeprefix("seed_") for s in seeds) or "none"
    return (f"{entry.path.relative_to(out)}  view: {shown or '-'}  trials: {trials}  "
            f"{entry.size() / 1e6:.1f} MB  settings: {diff}")


_SEED = re.compile(r"(?:influence_|_seed_)(\d+)\.")


def _current(out: Path, entry: store.Entry) -> Path | None:
    """The view's link for the results ``entry`` is of (its method's, the training's)."""
    if entry.kind == "train":
        v = paths.phase_root(out, "train")
    else:
        v = paths.phase_root(out, entry.kind) / entry.name
    return links.view_entry(v)
