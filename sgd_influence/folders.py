"""Saved identities and folder claims: which configuration a folder's results belong to.

Each phase's folder holds the identity of the configuration that made it, beside its
files (see ``Config.identity`` for which settings define what):

* ``train/seed_{s}/config.json``: the training run (data and training sections);
* ``influence/{method}/config.json``: the training run plus the method's own settings
  (``Method.settings``), so one method's settings never invalidate another's files;
* ``score/{method}/config.json`` (and ``score/noise_floor/``): the method's influence
  identity plus the evaluation section (``-ra``).

A folder of the same identity is reused; one of another is refused in one line naming
the differing settings, or with ``--overwrite`` removed and claimed afresh. Folders
written before identities were kept per method (one ``influence/config.json`` and one
``score/config.json`` for all) are taken over when the shared identity agrees with the
method's. The plan claims the folders before any task runs; a phase command run alone
claims its own.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import config as C
from . import fileio, paths
from . import methods as M

logger = logging.getLogger(__name__)


def check_trained_with(cfg: C.Config, out, seed: int) -> None:
    """Refuse settings that differ from those the training run of ``seed`` in ``out`` used.

    For a phase run alone on a finished training run: one line naming each differing
    flag with the training run's value and what to do.
    """
    path = paths.train_identity(out, seed)
    saved, ours = read_identity(path), cfg.train_identity()
    if saved is None:
        return
    diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    if not diff:
        return
    parts = []
    for k in diff:
        if k == "data_digest":
            if "dataset" not in diff:
                parts.append("a CSV data set of other content (CSV text or image bytes differ)")
        else:
            parts.append(f"{C.flag(k)} {_show(saved.get(k))} (given: {_show(ours.get(k))})")
    raise C.ConfigMismatch(
        f"{path}: seed {seed} was trained with {'; '.join(parts)}; give the training run's settings, "
        "or train again with yours in another -o folder")


def older_identity(saved: dict) -> dict:
    """A saved identity as this version writes it: one written before --smooth existed
    described a run of the ReLU network; a walk's or IF's written before --hvp existed
    took its second derivatives by double backward (--hvp exact)."""
    if "model" in saved and "smooth" not in saved:
        saved = {**saved, "smooth": False}
    if ("bn_influence" in saved or "if_damping" in saved) and "hvp" not in saved:
        saved = {**saved, "hvp": "exact"}
    return saved


def per_trial_noise(out, label_noise: float) -> bool:
    """True when ``out`` holds a run with ``label_noise`` made before --label-noise-seed
    existed (or continued since): its saved run configuration (else a training identity) has
    that noise and no ``label_noise_seed``, so its labels were flipped per trial
    (``Config.per_trial_noise``)."""
    if not label_noise > 0:
        return False
    out = Path(out)
    saved = [paths.run_config(out)] if paths.run_config(out).exists() else sorted(
        out.glob(paths.train_glob(paths.train_identity(out, 0).name)))
    for path in saved:
        try:
            d = fileio.read_json(path)
        except (OSError, ValueError):
            continue
        # left out by an older version; saved as null by a run that continued such a folder
        if d.get("label_noise") == label_noise and d.get("label_noise_seed") is None:
            return True
    return False


def continue_per_trial_noise(cfg: C.Config) -> C.Config:
    """``cfg`` with the per-trial flips of the run its folder holds, when that run was made
    with the same --label-noise before --label-noise-seed existed (not with --overwrite):
    the same command then reuses the folder's results. The caller applies it only when
    --label-noise-seed was not given."""
    if cfg.overwrite or cfg.per_trial_noise() or not per_trial_noise(cfg.output, cfg.label_noise):
        return cfg
    logger.info("%s: made before --label-noise-seed existed, with its label flips drawn per trial; "
                "continued so (give --label-noise-seed for flips of the same rows in every trial, "
                "in another -o folder or with --overwrite)", cfg.output)
    return C.replace(cfg, label_noise_seed=None)


def _show(v) -> str:
    return " ".join(str(x) for x in v) if isinstance(v, list) else str(v)


def check_saved(path: Path, identity: dict, overwrite: bool, what: str) -> bool:
    """Compare ``identity`` with the one saved at ``path``.

    Returns True when a matching identity was saved (finished work may be reused),
    False when nothing was saved. A different identity raises ConfigMismatch unless
    ``overwrite`` is set (then the caller starts afresh and returns False).
    """
    saved = read_identity(path)
    if saved is None:
        return False
    if not describe_diff(saved, identity):  # a key saved as null or left out: the same
        return True
    if overwrite:
        return False
    details = describe_diff(saved, identity)
    raise C.ConfigMismatch(
        f"{path}: holds {_article(what)} {what} of a different configuration ({details}); "
        "give its settings to reuse it, or use another -o folder or --overwrite"
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def read_identity(path) -> dict | None:
    """A saved identity (as this version writes it); None when there is none or it is
    damaged (then the results it described are of unknown configuration)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        saved = fileio.read_json(path)
    except fileio.DamagedFile as exc:
        logger.warning("%s: damaged (%s); the results it describes are computed again", path,
                       exc.reason)
        return None
    return older_identity(saved) if isinstance(saved, dict) else None


def _results_in(root: Path) -> bool:
    return root.exists() and any(f.is_file() and not f.name.startswith(".") and f.name != "config.json"
                                 for f in root.rglob("*"))


def describe_diff(old: dict, new: dict) -> str:
    """'key: old -> new, ...' for the keys whose values differ (digests shortened)."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    out = []
    for k in diff:
        if k == "data_digest":
            out.append("data_digest: the content of the CSV data set changed")
        else:
            out.append(f"{C.flag(k)}: {old.get(k)!r} -> {new.get(k)!r}")
    return ", ".join(out)


def claim_folder(identity_path: Path, root: Path, identity: dict, overwrite: bool, what: str) -> bool:
    """Make ``root`` hold results of ``identity``: True when it already does.

    Results of another configuration are refused (ConfigMismatch) unless ``overwrite``,
    in which case the whole ``root`` folder is removed. The identity is then saved.
    """
    root = Path(root)
    if not _results_in(root):  # nothing computed there yet (a run stopped at its start)
        fileio.write_json(identity_path, identity)
        return False
    if check_saved(identity_path, identity, overwrite, what):
        return True
    if read_identity(identity_path) is not None:
        logger.warning(
            "--overwrite: removing the %ss of another configuration in %s", what, root)
        shutil.rmtree(root)
    elif _results_in(root):  # an identity lost or damaged: whose results these are is unknown
        logger.warning("%s: no readable saved configuration; removing the %ss there and "
                       "computing them again", root, what)
        shutil.rmtree(root)
    fileio.write_json(identity_path, identity)
    return False


# --------------------------------------------------------------------------- the phases
def claim_training(cfg: C.Config, seed: int) -> bool:
    """Make ``train/seed_{seed}`` hold the training run of ``cfg``: True when it already
    did (finished files may be reused), False when it is claimed afresh."""
    out = Path(cfg.output)
    ident = cfg.train_identity()
    path = paths.train_identity(out, seed)
    if not _results_in(paths.train_dir(out, seed)):  # nothing trained there yet
        fileio.write_json(path, ident)
        return False
    if check_saved(path, ident, cfg.overwrite, "training run"):
        return True
    if paths.train_dir(out, seed).exists():
        shutil.rmtree(paths.train_dir(out, seed))  # --overwrite of another configuration
    fileio.write_json(path, ident)
    return False


def influence_identity(cfg: C.Config, method: str) -> dict:
    return {**cfg.train_identity(), **M.get(method).settings(cfg)}


def score_identity(cfg: C.Config, method: str | None) -> dict:
    """Scores of ``method`` (None: the noise floor, which depends on the training run and
    the replayed epochs only). A retrain replays the influence window (unless -ra), so the
    window is part of every method's scores, Random's and the floor's too."""
    base = cfg.train_identity() if method is None else influence_identity(cfg, method)
    window = {} if cfg.retrain_all else {WINDOW: cfg.infl_epochs}
    return {**base, **window, **cfg.identity("eval")}


# --------------------------------------------------------------------------- kept windows
# The results of another influence window are kept beside the current ones, in a folder
# named by that window (``influence/Hara@last1``, ``score/Random@last1``), so that another
# --infl-epochs in the same folder reuses the training run and loses nothing; running a
# kept window again brings its folder back. Only a difference in the window is kept so.
WINDOW = "infl_epochs"


def _window_epochs(identity: dict) -> int:
    return int(identity["n_epochs"]) if int(identity[WINDOW]) == 0 else int(identity[WINDOW])


def _replayed_epochs(root: Path) -> int | None:
    """The epochs one score file in ``root`` holds (one row each); None without one."""
    for f in sorted(root.glob("score_*.csv")):
        with open(f, "rb") as fh:
            return max(sum(1 for line in fh if line.strip()) - 1, 0)
    return None


def _saved(path: Path, root: Path, identity: dict, legacy: Path) -> dict | None:
    """The identity ``root``'s results were saved with (its own, else an older folder's
    shared one restricted to ``identity``'s keys). Scores saved before the window was part
    of every method's score identity get the window their files replayed (then saved)."""
    saved = read_identity(path) if path.exists() else _legacy(legacy, identity)
    if saved is None or WINDOW not in identity or saved.get(WINDOW) is not None:
        return saved
    rows = _replayed_epochs(root)
    if not rows:
        return saved
    saved = {**saved, WINDOW: identity[WINDOW] if rows == _window_epochs(identity) else rows}
    if path.exists():
        fileio.write_json(path, saved)
    return saved


def _same(saved: dict | None, identity: dict) -> bool:
    return saved is not None and not describe_diff(saved, identity)


def _other_window(saved: dict | None, identity: dict) -> bool:
    """True when ``saved`` differs from ``identity`` in the influence window only."""
    if saved is None or saved.get(WINDOW) is None or WINDOW not in identity:
        return False
    return _same({**saved, WINDOW: identity[WINDOW]}, identity) and saved[WINDOW] != identity[WINDOW]


def kept_folder(root: Path, infl_epochs: int) -> Path:
    """Where the results of window ``infl_epochs`` are kept beside ``root``."""
    return root.with_name(paths.variant(root.name, paths.window_tag(infl_epochs)))


def _switch_window(path: Path, root: Path, identity: dict, legacy: Path, overwrite: bool,
                   what: str, only_to_kept: bool = False) -> None:
    """Keep ``root``'s results of another window beside it, and bring back the kept
    results of ``identity``'s window. ``only_to_kept``: keep them only when ours are kept
    (a phase that reads results and computes none)."""
    saved = _saved(path, root, identity, legacy)
    ours = kept_folder(root, identity[WINDOW]) if WINDOW in identity else None
    ours_kept = ours is not None and _same(read_identity(ours / path.name), identity)
    done = []
    if _results_in(root) and _other_window(saved, identity) and (ours_kept or not only_to_kept):
        aside = kept_folder(root, saved[WINDOW])
        if _results_in(aside):
            if not overwrite:
                raise C.ConfigMismatch(
                    f"{aside}: holds {_article(what)} {what} of another configuration for window "
                    f"{paths.window_tag(saved[WINDOW])}, where {root}'s would be kept; use another "
                    "-o folder or --overwrite (replaces it)")
            logger.warning("--overwrite: removing the %ss of another configuration in %s", what, aside)
        if aside.exists():
            shutil.rmtree(aside)
        fileio.write_json(path, saved)  # a kept folder describes itself
        root.rename(aside)
        done.append(f"window {paths.window_tag(saved[WINDOW])} kept as {aside.name}")
    if ours_kept and not _results_in(root):
        if root.exists():
            shutil.rmtree(root)
        ours.rename(root)
        done.append(f"window {paths.window_tag(identity[WINDOW])} brought back from {ours.name}")
    if done:
        logger.info("%s: %s", root, ", ".join(done))


def _legacy(shared: Path, identity: dict) -> dict | None:
    """The shared identity of an older folder, restricted to ``identity``'s keys."""
    saved = read_identity(shared)
    return None if saved is None else {k: saved.get(k) for k in identity}


def _claim(path: Path, root: Path, identity: dict, legacy: Path, overwrite: bool, what: str) -> bool:
    _switch_window(path, root, identity, legacy, overwrite, what)
    old = None if path.exists() else _legacy(legacy, identity)
    if old is not None and _results_in(root):
        if not describe_diff(old, identity):
            fileio.write_json(path, identity)  # an older folder of this configuration: ours
            return True
        if not overwrite:
            raise C.ConfigMismatch(f"{legacy}: holds {_article(what)} {what} of a different configuration "
                                   f"({describe_diff(old, identity)}); use another -o folder or "
                                   "--overwrite")
        shutil.rmtree(root)
    return claim_folder(path, root, identity, overwrite, what)


def align_windows(cfg: C.Config) -> None:
    """Every current influence and score folder of ``cfg``'s window: those of another
    window (and nothing else different) are kept aside, those kept of ``cfg``'s window come
    back, for every method, not only the ones this command runs; so the current folders
    hold one window, and an analysis never pairs one window's results with another's."""
    out = Path(cfg.output)
    for method in M.names():
        root = paths.influence_dir(out, method)
        if root.exists() or any(root.parent.glob(paths.variant(method, "*"))):
            _switch_window(paths.method_identity(out, method), root, influence_identity(cfg, method),
                           paths.influence_identity(out), cfg.overwrite, "influence result")
    for method in (*M.names(), None):
        path, root, identity, legacy = _score_folder(cfg, method)
        if WINDOW in identity and (root.exists() or any(root.parent.glob(paths.variant(root.name, "*")))):
            _switch_window(path, root, identity, legacy, cfg.overwrite, "evaluation")


def claim_influence(cfg: C.Config, method: str) -> bool:
    """Make ``influence/{method}`` hold results of ``cfg``; True when it already did."""
    align_windows(cfg)
    out = Path(cfg.output)
    claimed = _claim(paths.method_identity(out, method), paths.influence_dir(out, method),
                     influence_identity(cfg, method), paths.influence_identity(out), cfg.overwrite,
                     "influence result")
    # the method's scores go with its influence results to (and from) a kept window, also
    # when the influence phase runs alone
    _switch_window(*_score_folder(cfg, method), cfg.overwrite, "evaluation")
    return claimed


def check_influence(cfg: C.Config, method: str) -> None:
    """Refuse to evaluate ``method`` on influence results of another configuration."""
    out = Path(cfg.output)
    path, root = paths.method_identity(out, method), paths.influence_dir(out, method)
    identity = influence_identity(cfg, method)
    _switch_window(path, root, identity, paths.influence_identity(out), False, "influence result",
                   only_to_kept=True)
    old = None if path.exists() else _legacy(paths.influence_identity(out), identity)
    if old is not None and not describe_diff(old, identity):
        return
    saved = _saved(path, root, identity, paths.influence_identity(out))
    if _results_in(root) and _other_window(saved, identity):
        held = [paths.window_tag(saved[WINDOW])] + sorted(
            paths.split_variant(p.name)[1] for p in root.parent.glob(paths.variant(method, "*"))
            if _results_in(p))
        raise C.ConfigMismatch(
            f"{root}: no {method} influence results of window {paths.window_tag(identity[WINDOW])} "
            f"(--infl-epochs {identity[WINDOW]}; this folder holds window {', '.join(held)}); "
            "compute them with the influence phase (python -m sgd_influence.infl, or the whole pipeline)")
    try:
        same = check_saved(path, identity, False, "influence result")
    except C.ConfigMismatch:
        saved = read_identity(path) or {}
        raise C.ConfigMismatch(
            f"{path}: the {method} scores were computed with other settings "
            f"({describe_diff(saved, identity)}); give the influence run's settings, or compute "
            "the influence again with yours (python -m sgd_influence.infl, or the whole pipeline)"
        ) from None
    if not same:
        raise FileNotFoundError(f"{path}: no influence results (run the influence phase first)")


def _score_folder(cfg: C.Config, method: str | None) -> tuple[Path, Path, dict, Path]:
    """(identity path, folder, identity, older shared identity) of ``score/{method}``
    (None: ``score/noise_floor``)."""
    out = Path(cfg.output)
    name = paths.FLOOR_FOLDER if method is None else method
    return (paths.score_method_identity(out, name), paths.score_dir(out, name),
            score_identity(cfg, method), paths.score_identity(out))


def claim_scores(cfg: C.Config, method: str | None) -> bool:
    """Make ``score/{method}`` (None: ``score/noise_floor``) hold scores of ``cfg``."""
    align_windows(cfg)
    return _claim(*_score_folder(cfg, method), cfg.overwrite, "evaluation")


def claim_run(cfg: C.Config, fed: dict | None = None) -> None:
    """Refuse a folder holding another configuration (or clear it with --overwrite); save cfg.

    A folder whose earlier run made no result yet (it failed at the start, e.g. on bad
    data) is taken over without --overwrite. The influence settings are not compared
    here: each method's folder is claimed on its own (another method's settings never
    invalidate its files).
    """
    out = Path(cfg.output)
    path = paths.run_config(out)
    saved_dict = read_identity(path)
    if saved_dict is not None:
        saved = C.Config.from_dict(saved_dict)
        old, new = (c.identity("data", "train", "eval") for c in (saved, cfg))
        if old != new:
            details = describe_diff(old, new)
            results = _holds_results(out)
            if results and not cfg.overwrite:
                raise C.ConfigMismatch(
                    f"{out}: holds a run of a different configuration ({details}); "
                    "use another -o folder or --overwrite")
            wipe = ["score", "summary", "fig"]
            if saved.train_identity() != cfg.train_identity() or not results:
                wipe += ["influence", "train"]
            if results:
                logger.warning("--overwrite: replacing the results of another configuration in %s "
                               "(%s)", out, details)
            for phase in wipe:
                _remove_current(paths.phase_root(out, phase))
    # ``input``: what the network is fed (shape, size rule, normalisation, augmentation)
    fileio.write_json(path, {**cfg.to_dict(), **({"input": fed} if fed else {})})


def _remove_current(root: Path) -> None:
    """Remove a phase folder's current results; kept windows' folders (``Hara@last2``)
    stay: each describes itself, is shown only beside the training run it belongs to, and
    comes back when its configuration is run again."""
    if not root.exists():
        return
    for child in root.iterdir():
        if child.is_dir() and paths.split_variant(child.name)[1] is not None:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    if not any(root.iterdir()):
        root.rmdir()


def _holds_results(out: Path) -> bool:
    """True when a phase folder holds any file besides the saved configurations."""
    return any(_results_in(paths.phase_root(out, phase)) for phase in ("train", "influence", "score"))
