"""One trial of the paper's pipeline in plain calls, without a task graph.

:func:`run_trial` reads like the method: train with SGD while recording every step,
score every training sample with each influence method, retrain without the n most
harmful samples for each n, and report the final scores. The pipeline
(:mod:`.pipeline`, :mod:`.plan`, :mod:`.execute`) schedules these same functions as
tasks, reuses finished files and spreads the work over Dask workers; this function
does none of that (it writes the training run's files under ``cfg.output``, which the
retrains replay from, and nothing else).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import config as C
from . import eval as ev
from . import methods, train
from .engine import load_prepared


def run_trial(cfg: C.Config, seed: int) -> pd.DataFrame:
    """Final validation and test scores of trial ``seed``: a row per method and n."""
    data = load_prepared(cfg, seed)  # the trial's split, resized (and label noise, if any)
    train.train(cfg, seed, data)  # plain SGD; record, epoch snapshots, final model
    rows = []
    for name in cfg.methods:
        # one score per training sample: negative = removing it lowers the validation loss
        scores, _facts = methods.get(name).scores(methods.Context(cfg, seed, data))
        harmful_first = np.argsort(scores, kind="mergesort")
        for n in cfg.remove_n_list:
            if n >= data.n_train:
                continue  # nothing would be left to train on
            removed = np.zeros(data.n_train, bool)
            removed[harmful_first[:n]] = True
            # replay the influence window (or, with -ra, every epoch) without them
            epochs = ev.retrain_scores(cfg, seed, data, removed if n else None)
            rows.append({"method": name, "n": n, "seed": seed, **epochs.iloc[-1].to_dict()})
    return pd.DataFrame(rows)
