"""What identifies a result: each configuration field's section, the fields left out of
identities, and a configuration's identity as it is saved (:meth:`Config.identity`).

A network of one's own (``--model FILE.py:FUNCTION`` or ``MODULE:FUNCTION``,
``--model-nnp``, ``--model-onnx``) and a CSV data set are identified by the content
digests of their files, not by their paths; :func:`resolve_data` fills the digests in
and makes the paths absolute.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

from . import data, fileio
from .settings import jsonable


# Each configuration field declares its section (run, data, train, influence, eval,
# exec) and how it enters the identity of the results its sections define (metadata
# ``key``: a rule of the ones below; absent: its value as saved; None: never, as for
# paths, whose content digests stand for them, and for which methods run or which n's
# are retrained, each naming its own files). A phase's identity is that of its sections
# (train: data + train; influence: + influence; evaluation: + eval).
def identity(cfg, *sections: str) -> dict:
    """The fields of ``sections`` of the configuration ``cfg`` that define results, as
    they are saved (with the settings of the built-in network for ``train``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("key", value)
        if f.metadata.get("section") in sections and rule is not None:
            out.update(rule(cfg, f.name))
    if "train" in sections:
        out.update(cfg.network_settings())
    return out


def value(cfg, name: str) -> dict:
    return {name: jsonable(getattr(cfg, name))}


def only_with(other: str):
    """The value, where the field ``other`` is set (an .nnp network's own settings, an
    ONNX network's input scaling, the seed of label flips that are made)."""
    return lambda cfg, name: value(cfg, name) if getattr(cfg, other) else {}


def data_key(cfg, name: str) -> dict:
    return {name: cfg.data_identity()}


def model_key(cfg, name: str) -> dict:
    """A built-in network by its name; a network of one's own by its file's content."""
    if cfg.model_nnp:
        return file_model_identity("nnp", cfg.model_nnp, cfg.model_digest)
    if cfg.model_onnx:
        return file_model_identity("onnx", cfg.model_onnx, cfg.model_digest)
    if is_user_model(cfg.model):
        return user_model_identity(cfg.model, cfg.model_digest)
    return value(cfg, name)


def augment_key(cfg, name: str) -> dict:
    """As saved before the modes: crop,flip and none as a bool."""
    return {name: {"crop,flip": True, "none": False}.get(cfg.augment, cfg.augment)}


def image_size_key(cfg, name: str) -> dict:
    """The size rule, left out for the built-in networks' own (as before the rule)."""
    rule = cfg.image_rule()
    return {} if rule is None else {name: list(rule) if isinstance(rule, tuple) else rule}


# --------------------------------------------------------------------------- networks of one's own
def is_user_model(model: str) -> bool:
    """``--model FILE.py:FUNCTION`` or ``MODULE:FUNCTION``: the user's own network."""
    return ":" in model


def check_model(model: str, known) -> None:
    """``--model`` names a registered network (``known``) or one of the user's."""
    if model not in known and not is_user_model(model):
        raise ValueError(f"--model: expected one of {', '.join(known)} or FILE.py:FUNCTION, got {model!r}")


def names_a_file(where: str) -> bool:
    """Whether the part before ':' of ``--model`` names a file (else a module)."""
    return where.endswith(".py") or "/" in where or os.sep in where


def user_model_identity(model: str, digest: str = "") -> dict:
    """A user network is identified by its function's name and its source file's bytes
    (an edited network is another run; the same file elsewhere is the same run);
    ``digest``, when known, stands for the bytes."""
    where, _, fn = model.rpartition(":")
    if digest:
        return {"model": f"{Path(where).name}:{fn}", "model_digest": digest}
    return {"model": f"{Path(where).name}:{fn}", "model_digest": model_source_digest(model)}


def file_model_identity(kind: str, path: str, digest: str = "") -> dict:
    """A network read from a file (``kind`` "nnp" or "onnx") is identified by the file's
    bytes, not its path or name."""
    return {"model": kind, "model_digest": digest or file_model_digest(kind, path)}


def file_model_digest(kind: str, path: str) -> str:
    """sha256 of an .nnp or ONNX network file (one line naming its flag when unreadable)."""
    try:
        return fileio.file_digest(Path(path).expanduser())
    except OSError as exc:
        raise ValueError(f"--model-{kind}: {path}: file not readable ({exc.strerror or exc})") from exc


def model_source_digest(model: str) -> str:
    """sha256 of a user network's source file (one line naming --model when unreadable)."""
    where, _, fn = model.rpartition(":")
    if names_a_file(where):
        path = Path(where).expanduser()
    else:
        try:  # a dotted name imports its parent package, which may be missing or fail
            spec = importlib.util.find_spec(where)
        except Exception as exc:
            raise ValueError(f"--model: cannot import module {where!r} "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
        if spec is None or not spec.origin:
            raise ValueError(f"--model: cannot import module {where!r}")
        path = Path(spec.origin)
    try:
        return fileio.file_digest(path)
    except OSError as exc:
        raise ValueError(f"--model: {path}: network file not readable ({exc.strerror or exc})") from exc


# --------------------------------------------------------------------------- resolution
def resolve_data(cfg):
    """The configuration ``cfg`` with absolute CSV paths and the CSV data set's content
    digests.

    The digests (CSV and image bytes, hashed once here) identify the data; the absolute
    paths let a phase started from another folder find it. A bad CSV raises the data
    layer's one-line DataError; labels are checked (one class or an absurd label is an
    error; classes without training rows a warning).
    """
    cfg = _absolute_model(cfg)
    if not cfg.is_csv:
        return dataclasses.replace(cfg, data_digest=())

    csvs = {k: getattr(cfg, k) for k in ("train_csv", "val_csv", "test_csv")}
    absolute = {k: (os.path.abspath(v) if v else v) for k, v in csvs.items()}
    data.check_csv_labels(absolute["train_csv"], absolute["test_csv"], absolute["val_csv"])
    digests = tuple(data.csv_digest(absolute[k]) if absolute[k] else "" for k in csvs)
    return dataclasses.replace(cfg, **absolute, data_digest=digests)


def _absolute_model(cfg):
    """A user network's file as an absolute path (a task started elsewhere finds it); a
    missing file is one line naming --model (or --model-nnp, --model-onnx)."""
    if cfg.model_nnp:
        path = Path(cfg.model_nnp).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model-nnp: {cfg.model_nnp}: file not found")
        return dataclasses.replace(cfg, model_nnp=str(path.resolve()), model_digest=file_model_digest("nnp", str(path)))
    if cfg.model_onnx:
        path = Path(cfg.model_onnx).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model-onnx: {cfg.model_onnx}: file not found")
        return dataclasses.replace(cfg, model_onnx=str(path.resolve()), model_digest=file_model_digest("onnx", str(path)))
    if not is_user_model(cfg.model):
        return dataclasses.replace(cfg, model_digest="")
    where, _, fn = cfg.model.rpartition(":")
    if names_a_file(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model: {where}: network file not found")
        cfg = dataclasses.replace(cfg, model=f"{path.resolve()}:{fn}")
    return dataclasses.replace(cfg, model_digest=model_source_digest(cfg.model))
