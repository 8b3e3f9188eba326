"""Settings owned by a method or a network.

A method (or a built-in network) declares what it alone depends on as a small frozen
dataclass whose fields are made by :func:`setting` (default, command-line flags, help)::

    @dataclass(frozen=True)
    class Settings:
        if_damping: float = setting(10.0, ["--if-damping"], "damping lambda of the Hessian",
                                    check=positive)

and registers it with its owner (``methods.base.register``, ``models.register``). Every
command that runs the owner takes the flags (:func:`add_arguments`), the Python API takes
them as keywords, and they are part of the identity of the owner's results only. The
values of a run live in ``Config.options`` under the field names; :func:`values` builds
the owner's dataclass from them.

Plug-ins (a module that registers a method or a network) are found in the package's
entry points (group ``sgd_influence.plugins``) and in the ``SGD_INFLUENCE_PLUGINS``
environment variable (module names or ``.py`` files, separated by ``,``), so that the
flags of a method of your own exist on the command line and on Dask workers alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import math
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from types import MappingProxyType

PLUGIN_GROUP = "sgd_influence.plugins"
PLUGIN_ENV = "SGD_INFLUENCE_PLUGINS"
# the package's own plug-ins (also when it runs from a source folder without its metadata)
BUILTIN = ("sgd_influence.models", "sgd_influence.methods")

_DECLARED: dict[str, dataclasses.Field] = {}  # field name -> its declaration
_READ_ONLY = MappingProxyType(_DECLARED)
_OWNERS: dict[tuple[str, str], type] = {}  # (kind, owner name) -> its settings class
_loaded = False


def setting(default, flags, help: str, **kw) -> dataclasses.Field:
    """A field of a settings dataclass: its default, flags and help text; ``choices``,
    ``check`` (a function of the value returning an error text or None), ``identity``
    (False: the setting changes how, not what: it keys no result), ``nargs``, ``negatable``
    (a --no- form for a bool)."""
    return field(default=default, metadata={"flags": list(flags), "help": help, **kw})


def positive(value) -> str | None:
    return None if value > 0 and math.isfinite(value) else "expected a positive finite number"


def at_least(low: int, words: str | None = None):
    """A check that a number is ``low`` or more (``words``: how the error names what is expected)."""
    return lambda value: None if value >= low else f"expected {words or f'an integer >= {low}'}"


def declare(kind: str, owner: str, cls: type | None) -> None:
    """Record ``owner``'s settings class; a name another owner declares must mean the same
    (flags, default and help), as ``--hvp`` does for Hara, Ours and IF."""
    if cls is None:
        return
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise TypeError(f"{kind} {owner}: Settings must be a frozen dataclass")
    for f in fields(cls):
        if "flags" not in f.metadata:
            raise TypeError(f"{kind} {owner}: setting {f.name} has no flags (make it with setting())")
        known = _DECLARED.get(f.name)
        if known is not None and (known.default, known.metadata["flags"], known.metadata["help"]) != (
                f.default, f.metadata["flags"], f.metadata["help"]):
            raise ValueError(f"{kind} {owner}: setting {f.name} is declared otherwise elsewhere")
        _DECLARED[f.name] = f
    _OWNERS[(kind, owner)] = cls


def undeclare(kind: str, owner: str) -> None:
    """Forget ``owner``'s settings (the names no other owner declares go with them)."""
    _OWNERS.pop((kind, owner), None)
    still = {f.name for cls in _OWNERS.values() for f in fields(cls)}
    for name in [n for n in _DECLARED if n not in still]:
        del _DECLARED[name]


def load_plugins() -> None:
    """Import the package's own plug-ins, the entry points and $SGD_INFLUENCE_PLUGINS once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        importlib.import_module(name)
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.value not in BUILTIN:
            ep.load()
    for item in filter(None, (s.strip() for s in os.environ.get(PLUGIN_ENV, "").split(","))):
        _import(item)


def _import(item: str) -> None:
    if not item.endswith(".py"):
        try:
            importlib.import_module(item)
        except ImportError as exc:
            raise ValueError(f"{PLUGIN_ENV}: cannot import {item!r} ({exc})") from exc
        return
    path = Path(item).expanduser().resolve()
    name = f"sgd_influence_plugin_{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.is_file():
        raise ValueError(f"{PLUGIN_ENV}: {item}: no such file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def declared() -> Mapping[str, dataclasses.Field]:
    """Every declared setting by name (the plug-ins loaded first), read only."""
    load_plugins()
    return _READ_ONLY


def owner_class(kind: str, owner: str) -> type | None:
    load_plugins()
    return _OWNERS.get((kind, owner))


def owners(kind: str) -> dict[str, type]:
    load_plugins()
    return {o: c for (k, o), c in _OWNERS.items() if k == kind}


def values(cls: type, options: dict):
    """``cls`` with the run's values (``options``; defaults for the others)."""
    return cls(**{f.name: options[f.name] for f in fields(cls) if f.name in options})


def identity(cls: type | None, options: dict) -> dict:
    """The settings of ``cls`` that key its owner's results, as they are saved."""
    if cls is None:
        return {}
    got = values(cls, options)
    return {f.name: jsonable(getattr(got, f.name)) for f in fields(cls) if f.metadata.get("identity", True)}


def jsonable(v):
    """A value as saved (a tuple as a list)."""
    return list(v) if isinstance(v, tuple) else v


def flag(name: str) -> str | None:
    f = _DECLARED.get(name)
    return "/".join(f.metadata["flags"]) if f is not None else None


TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False"}


def _is(value, typ: str) -> bool:
    if typ == "bool":
        return isinstance(value, bool)
    if typ in ("int", "float"):
        kind = numbers.Integral if typ == "int" else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)
    return isinstance(value, str)


def _type_problem(f: dataclasses.Field, value) -> str | None:
    """Why ``value`` is not of the type the annotation of ``f`` names (bool, int, float or
    str, optional or a tuple of one; other annotations are not checked), else None."""
    typ = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")).replace(" ", "")
    optional, typ = typ.endswith("|None"), typ.removesuffix("|None")
    inner = typ[len("tuple["):].split(",")[0] if typ.startswith("tuple[") else None
    if (value is None and optional) or (inner or typ) not in TYPE_WORDS:
        return None
    if inner:
        ok = isinstance(value, tuple) and all(_is(v, inner) for v in value)
        return None if ok else f"expected a list of {TYPE_WORDS[inner].split(' ', 1)[1]}s"
    return None if _is(value, typ) else f"expected {TYPE_WORDS[typ]}{' or None' if optional else ''}"


def check_value(f: dataclasses.Field, value, name: str) -> None:
    """The type (by annotation), declared ``choices`` (a tuple of them) and ``check`` of the
    field ``f`` made by :func:`setting`, applied to ``value`` (None passes the choices): one
    line naming the flag ``name``."""
    choices = f.metadata.get("choices")
    problem = _type_problem(f, value)
    if not problem and isinstance(choices, tuple) and value is not None and value not in choices:
        problem = f"expected {either(choices)}"
    if not problem and "check" in f.metadata:
        problem = f.metadata["check"](value)
    if problem:
        raise ValueError(f"{name}: {problem}, got {value!r}")


def either(names) -> str:
    """``a, b or c``."""
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def add_arguments(parser: argparse.ArgumentParser, names) -> None:
    """The flags of the named settings; defaults left unset (a preset or a saved run fills them)."""
    for name in names:
        add_argument(parser, _DECLARED[name])


def add_argument(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    """The flag of one field made by :func:`setting` (a setting of a method or network, or
    a field of the configuration), its default left unset; a help text that says its own
    default keeps it. ``choices`` may be a function (choices known when the flag is made)."""
    md = f.metadata
    text = md["help"] if "default:" in md["help"] else f"{md['help']} (default: {jsonable(f.default)})"
    kw = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
    if isinstance(f.default, bool):
        kw["action"] = argparse.BooleanOptionalAction if md.get("negatable") else "store_true"
    else:
        default = f.default[0] if isinstance(f.default, tuple) and f.default else f.default
        kw["type"] = md.get("type") or {type(None): str, tuple: int}.get(type(default), type(default))
        for key in ("nargs", "metavar", "choices"):
            if key in md:
                kw[key] = md[key]() if callable(md[key]) else md[key]
    parser.add_argument(*md["flags"], **kw)
