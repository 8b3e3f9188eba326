"""Python interface, e.g. for a notebook: run the whole pipeline, read its rankings.

::

    import sgd_influence

    out = sgd_influence.run(preset="tiny", output="output/tiny", jobs=1)
    worst = sgd_influence.scores(out, "Ours")  # averaged over trials, most harmful first
    print(worst.head(10))

* :func:`run` runs the pipeline on one output folder as ``train_infl_eval.py`` does
  (train, influence, retrain, analyse; finished files are reused) and returns the folder;
* :func:`scores` reads a method's ranking: the one averaged over the trials
  (``influence/{method}/influence_mean.csv``, see :mod:`sgd_influence.ranking`) or one
  trial's influence file;
* :class:`Config` is the configuration ``run`` accepts (every field a flag of
  ``train_infl_eval.py``: ``--label-noise`` is ``label_noise``, ``-nt`` is ``n_trials``).

The messages go through :mod:`logging` (logger ``sgd_influence``); in a notebook
``logging.basicConfig(level=logging.INFO)`` shows them. Errors are raised as the
exceptions the command line reports in one line (ValueError for a bad setting,
FileNotFoundError for a missing input, the failed task's error).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from . import artifacts, flags, identities, paths, presets, ranking, runlock
from . import config as C
from .cli import check_config
from .config import Config
from .pipeline import run_all
from .settings import declared as declared_settings

__all__ = ["Config", "run", "scores"]


def run(config: Config | dict | None = None, /, *, scheduler: str | None = None, **settings) -> Path:
    """Run the whole pipeline and return its output folder (``Config.output``).

    ``config``: a :class:`Config` (the fields it was made with, with ``settings``
    replacing them), or a dict of its fields; ``settings``: fields given as keywords
    (they override the Config's or the dict's). As on the command line, the defaults are
    overridden by ``preset`` (``"demo"``, ``"paper"``, ``"tiny"``) and then by the fields
    given (``Config(preset="tiny", output="out")`` is the tiny run), and ``train_csv``
    implies ``dataset="csv"``. Every value is checked as the command line checks it (one
    line naming the flag). Fields of several values take a
    list or tuple (``methods=["Ours", "Random"]``; one value alone is fine). ``jobs=1``
    runs every task in this process; the default (0) starts a local Dask cluster of one
    worker process per core; ``scheduler`` runs on an existing Dask cluster (an address).

    The folder is locked while the run writes in it. Results are kept in its store under
    the settings they depend on: another configuration in the same folder computes what it
    lacks and keeps the rest (``overwrite=True`` computes this configuration's again).
    """
    cfg = _config(config, settings)
    check_config(cfg)
    cfg = identities.resolve_data(cfg)
    with runlock.hold(cfg.output, wait=cfg.wait):
        run_all(cfg, scheduler=scheduler)
    return Path(cfg.output)


def scores(out, method: str, seed: int | None = None) -> pd.DataFrame:
    """A ranking of ``method`` in the output folder ``out``, most harmful first
    (``method``: a method's name, or the label of a kept window's results, ``Hara@last1``).

    ``seed`` None: the ranking averaged over every trial's influence file found in
    ``out`` now, as ``influence/{method}/influence_mean.csv`` holds it after an analysis
    (columns ``x:image, y:label, influence, datasource_index, influence_sem, n_trials``; see
    :mod:`sgd_influence.ranking`); that file itself when no per-seed file is there. ``seed`` s: trial s's influence file
    (``x:image, y:label, influence, datasource_index``). Negative influence = harmful:
    leaving the sample out is estimated to lower the validation loss.
    """
    out = Path(out)
    if seed is None:
        path = paths.influence_mean(out, method)
        # averaged from the per-seed files as they are now (a trial computed after the
        # last analysis counts); the analysis's file when no per-seed file is there
        found = ranking.mean_ranking(out, method)
        if found is not None:
            return found[0]
        if path.exists():
            return artifacts.read_influence_mean(path)
    else:
        path = paths.influence(out, method, int(seed))
        if path.exists():
            return artifacts.read_influence(path)
    have = sorted({f"{m} (seed {s})" for m, s, _p in artifacts.influence_files(out)})
    raise FileNotFoundError(f"{path}: not found; influence files in {out}: {', '.join(have) or 'none'}")


def _config(config, settings: dict) -> Config:
    """The validated configuration of :func:`run`'s arguments."""
    if isinstance(config, Config):
        # the fields the Config was made with, then the keywords; a preset among the
        # keywords applies to the rest, as Config(preset=...) does
        values = {**presets.given_fields(config), **_values(settings)}
        return Config(**values).validate()
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"run(): expected a Config, a dict of its fields or keywords, got "
                        f"{type(config).__name__}")
    values = _values({**(config or {}), **settings})
    return flags.from_args(argparse.Namespace(**values))


def _values(values: dict) -> dict:
    """``values`` checked against Config's fields; one value of a multi-value field as a tuple."""
    known = [k for k in C.ALL_FIELDS if k != "options"] + list(declared_settings())
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"run(): unknown setting(s) {', '.join(unknown)}; expected fields of "
                        f"sgd_influence.Config or settings of a method or network: {', '.join(known)}")
    tuples = {f.name for f in dataclasses.fields(Config) if isinstance(f.default, tuple)}
    out = {}
    for k, v in values.items():
        if k in tuples and isinstance(v, (str, int)):
            v = (v,)
        out[k] = tuple(v) if isinstance(v, list) else v
    return out
