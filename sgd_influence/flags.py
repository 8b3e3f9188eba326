"""The configuration on the command line: :func:`add_arguments` turns the chosen fields
of :class:`~sgd_influence.config.Config` (each carries its flags and help text) and the
settings of methods and networks into argparse options; :func:`from_args` builds the
validated configuration from the parsed namespace, :func:`config_from_folder` over the
settings an output folder's last whole run saved.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from . import fileio, paths, settings
from .config import ALL_FIELDS, Config, section_fields
from .presets import PRESETS

logger = logging.getLogger("sgd_influence")  # the logger of the command line (cli.py)


def add_arguments(parser: argparse.ArgumentParser, names=None) -> None:
    """Add the flags of the named fields and settings of methods and networks (default:
    all of them); defaults are left unset so presets can apply."""
    by_name = {f.name: f for f in fields(Config)}
    for name in (*ALL_FIELDS, *settings.declared()) if names is None else names:
        if name not in by_name:
            settings.add_arguments(parser, [name])
        elif by_name[name].metadata["flags"]:  # not an internal field
            settings.add_argument(parser, by_name[name])
        if name == "augment":
            parser.add_argument("--no-augment", dest=name, action="store_const", const="none",
                                default=argparse.SUPPRESS, help="no augmentation (--augment none)")


def _given(ns: argparse.Namespace) -> dict:
    """The fields and settings of methods and networks given on the command line."""
    known = set(ALL_FIELDS) | set(settings.declared())
    return {k: v for k, v in vars(ns).items() if k in known}


def from_args(ns: argparse.Namespace, **overrides) -> Config:
    """Defaults < preset < explicit flags < overrides; validated."""
    given = _given(ns)
    values = {**given, **overrides}
    for k, v in list(values.items()):
        if isinstance(v, list):
            values[k] = tuple(v)
    check_one_network(given)
    return Config(**values).validate()


def check_one_network(given: dict) -> None:
    """--model, --model-nnp and --model-onnx each name the network: one of them."""
    if given.get("model_nnp") and "model" in given:
        raise ValueError("--model-nnp: given with --model; the .nnp file is the network, give one of them")
    if given.get("model_onnx") and ("model" in given or given.get("model_nnp")):
        other = "--model" if "model" in given else "--model-nnp"
        raise ValueError(f"--model-onnx: given with {other}; the ONNX file is the network, give one of them")


def config_from_folder(ns: argparse.Namespace) -> Config:
    """Defaults < the output folder's saved run configuration < preset < flags."""
    given = _given(ns)
    check_one_network(given)
    out = given.get("output", Config.output)
    saved_path = paths.run_config(out)
    if not saved_path.exists():
        return from_args(ns)
    # the settings of what was computed, and how many trials; not how (--hara-cache and
    # the execution section are chosen per command)
    keep = (set(section_fields("data", "train", "influence", "eval")) | {"n_trials"}
            | set(settings.declared())) - {"hara_cache"}
    saved = fileio.read_json(saved_path)
    values = {k: v for k, v in saved.items() if k in keep}
    if "train_csv" in given or "dataset" in given:  # a data set given here replaces the saved one
        for k in ("dataset", "train_csv", "val_csv", "test_csv"):
            values.pop(k, None)
    if "model" in given or "model_nnp" in given or "model_onnx" in given:  # so does a network
        for k in ("model", "model_nnp", "nnp_network", "init_from_nnp", "model_onnx", "input_mean",
                  "input_std"):
            values.pop(k, None)
    if given.get("preset"):
        values.update(PRESETS[given["preset"]])
    values.update(given)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    logger.info("settings of %s used as defaults", saved_path)
    return Config(**values).validate()
