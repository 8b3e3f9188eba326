"""Confident learning (Northcutt, Jiang and Chuang 2021) as a control: the method ``CL``.

The simplest alternative a user has for finding wrong labels looks at no training run
of the network at all: a model's out-of-fold predicted probabilities, and how much they
trust each sample's given label. ``CL`` computes them with a K-fold cross-validation
(``--cl-folds``, stratified, shuffled with the trial's seed) of a multinomial logistic
regression on the pixels (the training images as the network sees them, scaled to
[0, 1], not augmented; L2 strength 1 / ``--cl-c``), then cleanlab's label-quality score
of the given label (``cleanlab.rank.get_label_quality_scores``; ``--cl-score``
self_confidence, the default: the out-of-fold probability of the given label). A low
quality marks a likely wrong label. The score saved is quality - 1 (in [-1, 0]): the
least trusted labels come first and are the ones removed, as with every method. It is
not an estimate of a change of the validation loss.

Facts: ``folds``, ``flagged`` (how many samples cleanlab's ``find_label_issues`` flags
from the same probabilities, its own estimate of the number of wrong labels),
``iterations`` (the most L-BFGS iterations of a fold) and ``converged``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from .. import settings
from ..settings import at_least, positive, setting
from .base import Context, register
from .grads import one_blas_thread

logger = logging.getLogger(__name__)

SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass(frozen=True)
class CLSettings:
    cl_folds: int = setting(4, ["--cl-folds"], "CL: folds of the cross-validation that gives the "
                            "out-of-fold probabilities", check=at_least(2))
    cl_c: float = setting(1.0, ["--cl-c"], "CL: inverse L2 strength C of the logistic regression",
                          check=positive)
    cl_max_iter: int = setting(500, ["--cl-max-iter"], "CL: most L-BFGS iterations per fold",
                               check=at_least(1))
    cl_score: str = setting("self_confidence", ["--cl-score"], "CL: cleanlab's label-quality score",
                            choices=SCORES)


def out_of_fold_probabilities(x: np.ndarray, labels: np.ndarray, n_classes: int, folds: int,
                              seed: int, c: float = 1.0, max_iter: int = 500) -> tuple[np.ndarray, dict]:
    """(N, n_classes) probabilities of each sample from a logistic regression fitted on the
    other folds (a class missing from a fold's fit gets probability 0), and the facts."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n = len(labels)
    if folds > n:
        raise ValueError(f"--cl-folds: expected at most the number of training samples ({n}), got {folds}")
    features = x.reshape(n, -1).astype(np.float64) / 255.0
    probs = np.zeros((n, n_classes), np.float64)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    iterations = 0
    with warnings.catch_warnings():
        # a class with fewer members than folds: sklearn's warning says it, the probabilities
        # are still out-of-fold; convergence is reported in the facts instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for fit, held in split.split(features, labels):
            model = LogisticRegression(C=c, max_iter=max_iter).fit(features[fit], labels[fit])
            probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
            iterations = max(iterations, int(np.max(model.n_iter_)))
    converged = iterations < max_iter
    if not converged:
        logger.warning("CL: a fold's logistic regression stopped at --cl-max-iter %d before it "
                       "converged", max_iter)
    return probs, {"folds": folds, "iterations": iterations, "converged": converged}


class ConfidentLearning:
    """Out-of-fold label quality (cleanlab) of a logistic regression on the pixels."""

    name, color, needs = "CL", "tab:cyan", "nothing"
    Settings = CLSettings

    def settings(self, cfg) -> dict:
        return settings.identity(CLSettings, cfg.options)

    @one_blas_thread
    def scores(self, ctx: Context):
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        own = settings.values(CLSettings, ctx.cfg.options)
        given = ctx.data.train_y.ravel()
        present, labels = np.unique(given, return_inverse=True)  # cleanlab wants 0..K-1, all present
        probs, facts = out_of_fold_probabilities(ctx.data.train_x, labels, len(present), own.cl_folds,
                                                 ctx.seed, own.cl_c, own.cl_max_iter)
        quality = get_label_quality_scores(labels, probs, method=own.cl_score)
        facts["flagged"] = int(np.count_nonzero(find_label_issues(labels, probs, n_jobs=1)))
        return quality.astype(np.float64) - 1.0, facts


register(ConfidentLearning())
