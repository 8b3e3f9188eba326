"""``python -m sgd_influence <command> [flags]`` (also the ``sgd-influence`` command):
``run`` (the whole pipeline, as train_infl_eval.py), ``train``, ``infl``, ``eval`` or
``analyze`` (one phase alone)."""

from __future__ import annotations

import sys

from sgd_influence.cli import main

if __name__ == "__main__":
    sys.exit(main())
