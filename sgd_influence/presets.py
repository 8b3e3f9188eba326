"""Named settings (``--preset``) and how a configuration is constructed from keywords:
defaults < the preset's settings < the fields given (:func:`with_preset` wraps
``Config.__init__``; :func:`given_fields` tells which fields were given).
"""

from __future__ import annotations

import functools
from dataclasses import fields

from . import settings

DEFAULT_REMOVE = (0, 1, 10, 40, 100, 200, 600, 1000, 3000, 5000, 10000, 30000)  # the default -r too

# Named settings. 'demo' runs the whole pipeline on the offline mnist5k data set in a few
# minutes on a 2-core laptop, with 10 % of its training labels flipped so there is
# something to find; 'paper' is the paper's setting on MNIST (ReLU cifarnet, constant
# learning rate, the reference code's batch-norm terms). With no preset: the smooth
# cifarnet, the decayed end of training and the exact batch-norm derivative (the
# configuration whose scores predict retraining).
PRESETS: dict[str, dict] = {
    "demo": dict(
        dataset="mnist5k", model="cifarnet", width=8, n_epochs=10, n_trials=2, label_noise=0.1,
        remove_n_list=(0, 10, 30, 100, 300, 1000),
    ),
    "paper": dict(dataset="mnist", model="cifarnet", width=32, smooth=False, hvp="exact", n_epochs=20, n_trials=6,
                  lr=0.05, lr_schedule="constant", bn_influence="reference", batch_size=64,
                  infl_epochs=1, remove_n_list=DEFAULT_REMOVE),
    "tiny": dict(
        dataset="mnist5k", model="logreg", n_epochs=2, n_trials=1, batch_size=32, lr=0.005,
        remove_n_list=(0, 10, 100),
    ),
}


def with_preset(init, all_fields: tuple[str, ...]):
    """Config's constructor ``init`` (its fields: ``all_fields``), taking keywords only:
    defaults < the ``preset``'s settings < the fields given, and ``train_csv`` without
    ``dataset`` means ``dataset="csv"``, as on the command line. ``Config(preset="tiny",
    output="out")`` is the tiny run."""

    @functools.wraps(init)
    def __init__(self, *args, **given):
        if args:
            raise TypeError("Config() takes its fields as keywords (Config(output=..., ...))")
        values = dict(given)
        preset = values.get("preset")
        base = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
            base = PRESETS[preset]
        # settings of methods and networks go into ``options``: given ones over the given
        # options over the preset's
        extra = {k: v for k, v in {**base, **values}.items() if k not in all_fields}
        unknown = sorted(set(extra) - set(settings.declared())) if extra else []
        if unknown:
            raise TypeError(f"Config() got an unexpected keyword argument {unknown[0]!r}")
        options = {**{k: v for k, v in base.items() if k in extra}, **(values.get("options") or {}),
                   **{k: v for k, v in values.items() if k in extra}}
        values = {**{k: v for k, v in base.items() if k not in extra},
                  **{k: v for k, v in values.items() if k not in extra}}
        if options:
            values["options"] = options
        if given.get("train_csv") and "dataset" not in given:  # over a preset's data set too
            values["dataset"] = "csv"
        init(self, **values)
        object.__setattr__(self, "_given", frozenset(given))  # see given_fields

    return __init__


def given_fields(cfg) -> dict:
    """The fields the configuration ``cfg`` was constructed with (not filled in by the
    defaults or its preset)."""
    names = getattr(cfg, "_given", None)
    return {k: getattr(cfg, k) for k in (names if names is not None else (f.name for f in fields(cfg)))}
