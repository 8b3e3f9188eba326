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

from . import fileio
from .settings import jsonable

# Each field's section. A phase's saved identity is the identity fields of its sections
# (train: data + train; influence: + influence; evaluation: + eval); run and exec
# settings never define results.
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("output", "n_trials", "options"),
    "data": ("dataset", "label_noise", "label_noise_seed", "train_csv", "val_csv", "test_csv", "data_dir",
             "data_digest"),
    "train": ("model", "model_digest", "model_nnp", "nnp_network", "init_from_nnp", "model_onnx",
              "input_mean", "input_std", "lr", "lr_schedule", "lr_final", "lr_decay_epochs",
              "batch_size", "n_epochs", "augment", "image_size"),
    "influence": ("infl_epochs", "methods"),
    "eval": ("retrain_all", "remove_n_list", "noise_floor_k", "noise_floor_draws"),
    "exec": ("context", "device_id", "jobs", "overwrite", "wait", "preset"),
}
# in a section but not part of its identity: paths (the content digests stand for the
# CSVs and the .nnp file), which methods run, how Hara's parameters are obtained, and the
# retrains' n's and draws (each names its own files)
NOT_IDENTITY = frozenset({"train_csv", "val_csv", "test_csv", "data_dir", "model_nnp", "methods",
                          "remove_n_list", "noise_floor_k", "noise_floor_draws",
                          "model_onnx"})


def section_fields(*sections: str) -> tuple[str, ...]:
    return tuple(name for s in sections for name in SECTIONS[s])


def identity(cfg, *sections: str) -> dict:
    """The fields of ``sections`` of the configuration ``cfg`` that define results, as
    they are saved."""
    out = {}
    for section in sections:
        for name in SECTIONS[section]:
            if name in NOT_IDENTITY:
                continue
            if name == "data_digest":
                out[name] = cfg.data_identity()
            elif name == "model" and cfg.model_nnp:
                out.update(file_model_identity("nnp", cfg.model_nnp, cfg.model_digest))
            elif name == "model" and cfg.model_onnx:
                out.update(file_model_identity("onnx", cfg.model_onnx, cfg.model_digest))
            elif name == "model" and is_user_model(cfg.model):
                out.update(user_model_identity(cfg.model, cfg.model_digest))
            elif name == "model_digest":
                continue  # part of the model's identity (a user network only)
            elif name in ("nnp_network", "init_from_nnp"):
                if cfg.model_nnp:  # only an .nnp network has them
                    out[name] = jsonable(getattr(cfg, name))
            elif name == "augment":  # as saved before the modes: crop,flip / none as a bool
                out[name] = {"crop,flip": True, "none": False}.get(cfg.augment, cfg.augment)
            elif name == "image_size":
                rule = cfg.image_rule()
                if rule is not None:  # the built-in networks' rule is left out, as before
                    out[name] = list(rule) if isinstance(rule, tuple) else rule
            elif name in ("input_mean", "input_std"):
                if cfg.model_onnx:  # only an ONNX network has them
                    out[name] = jsonable(getattr(cfg, name))
            elif name == "label_noise_seed":
                if cfg.label_noise > 0:  # without label noise it changes nothing
                    out[name] = cfg.label_noise_seed
            else:
                out[name] = jsonable(getattr(cfg, name))
        if section == "train":
            out.update(cfg.network_settings())
    return out


# --------------------------------------------------------------------------- networks of one's own
def is_user_model(model: str) -> bool:
    """``--model FILE.py:FUNCTION`` or ``MODULE:FUNCTION``: the user's own network."""
    return ":" in model


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
    from . import data

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
