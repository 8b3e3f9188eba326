"""Shared command-line plumbing: logging, configuration, context, one-line errors."""

from __future__ import annotations

import logging

from . import config as C
from . import fileio, runlock

logger = logging.getLogger("sgd_influence")


def setup_logging(level=logging.INFO) -> None:
    root = logging.getLogger()
    # nnabla puts a plain stream handler on the root logger at import: replace plain stream
    # handlers with ours (on the current stderr); others (a user's file, pytest's) stay.
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("sgd_influence").setLevel(level)
    logging.getLogger("nnabla").setLevel(logging.WARNING)


def run_cli(parser, argv, body) -> int:
    """Parse, build the configuration, set the nnabla context and run ``body(cfg, ns)``.

    Bad input (ValueError, including the data layer's DataError and a configuration
    mismatch) and missing files end with one error line and exit status 2.
    """
    ns = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = C.from_args(ns)
        from .context import set_context

        cfg = C.resolve_data(cfg)
        set_context(cfg.context, cfg.device_id)
        with runlock.hold(cfg.output, wait=cfg.wait):
            body(cfg, ns)
    except fileio.WriteError as exc:
        logger.error("%s", exc)
        return 1
    except (ValueError, FileNotFoundError, KeyError, FloatingPointError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        logger.error("%s", msg)
        return 2
    return 0

