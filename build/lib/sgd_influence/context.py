"""Choice of the nnabla compute context (CPU, or cuDNN when nnabla-ext-cuda is installed)."""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)

CONTEXTS = ("auto", "cpu", "cudnn")


def cudnn_available() -> bool:
    """True when the nnabla CUDA extension is importable (nnabla-ext-cuda installed)."""
    try:
        return importlib.util.find_spec("nnabla_ext.cudnn") is not None
    except (ImportError, ValueError):
        return False


def resolve_context_name(name: str, cudnn_present: bool | None = None) -> str:
    """Map a --context value to the extension name nnabla should use.

    'auto' picks 'cudnn' when the extension is installed, else 'cpu'. Asking for
    'cudnn' without the extension is an error with one clear line.
    """
    if name not in CONTEXTS:
        raise ValueError(f"--context: expected one of {', '.join(CONTEXTS)}, got {name!r}")
    present = cudnn_available() if cudnn_present is None else cudnn_present
    if name == "auto":
        return "cudnn" if present else "cpu"
    if name == "cudnn" and not present:
        raise ValueError(
            "--context cudnn: the nnabla CUDA extension is not installed "
            "(pip install nnabla-ext-cuda120 matching nnabla 1.39.0; see README 'GPU')"
        )
    return name


def set_context(name: str = "auto", device_id: int = 0):
    """Resolve, build and install the default nnabla context; returns it.

    On cuDNN the convolution algorithms are restricted to deterministic ones so that
    the same command gives the same numbers (replay relies on it).
    """
    import nnabla as nn
    from nnabla.ext_utils import get_extension_context

    ext = resolve_context_name(name)
    kwargs = {"type_config": "float"}
    if ext == "cudnn":
        kwargs["device_id"] = str(device_id)
        _set_cudnn_deterministic()
    ctx = get_extension_context(ext, **kwargs)
    nn.set_default_context(ctx)
    logger.debug("nnabla context: %s", ctx)
    return ctx


def _set_cudnn_deterministic() -> None:
    """Ask nnabla-ext-cuda for deterministic cuDNN algorithms (read when the extension starts)."""
    import os

    os.environ.setdefault("NNABLA_CUDNN_DETERMINISTIC", "1")
