"""A user's own network: a Python function ``fn(x, num_classes, norm) -> logits``.

``--model path/to/file.py:function`` loads the function from a file, ``--model
package.module:function`` from an importable module. The function builds its graph with
nnabla's parametric functions (``PF.convolution``, ``PF.affine``, ...) and calls
``norm(h, name)`` for batch normalisation; its parameters keep the names it gives them
(``final.h5`` too). Its default initializers draw from nnabla's generator, which the
project seeds from the trial seed while the parameters are created.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from ..identities import names_a_file
from .registry import ModelError


def split(arch: str) -> tuple[str, str]:
    where, _, fn = arch.rpartition(":")
    if not where or not fn:
        raise ModelError(f"--model: expected FILE.py:FUNCTION or MODULE:FUNCTION, got {arch!r}")
    return where, fn


def load_function(arch: str) -> Callable:
    """The network function named by ``arch`` (one-line ModelError when it cannot be had)."""
    where, name = split(arch)
    if names_a_file(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ModelError(f"--model: {path}: network file not found")
        key = "sgd_influence_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: any error is reported in one line
            raise ModelError(f"--model: {path}: the file failed to load "
                             f"({type(exc).__name__}: {exc})") from exc
        sys.modules.setdefault(key, module)
        origin = str(path)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ModelError(f"--model: cannot import module {where!r} ({exc})") from exc
        origin = where
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ModelError(f"--model: {origin}: no function {name!r}")
    return fn


class FunctionModel:
    """A network given as a function of (x, num_classes, norm)."""

    def __init__(self, fn: Callable, num_classes: int, name: str | None = None):
        self.fn, self.num_classes = fn, num_classes
        self.name = name or getattr(fn, "__name__", "network")

    def build(self, x, norm):
        try:
            return self.fn(x, self.num_classes, norm)
        except ModelError:
            raise
        except Exception as exc:  # the user's code: one line naming the network
            raise ModelError(f"network {self.name}: building the graph failed "
                             f"({type(exc).__name__}: {exc})") from exc

    def export_name(self, name: str) -> str:
        return name


def function_model(arch: str, num_classes: int) -> FunctionModel:
    return FunctionModel(load_function(arch), num_classes, name=arch)
