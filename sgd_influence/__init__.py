"""SGD-influence data cleansing on nnabla (Hara et al. 2019; last-weight approximation).

For notebooks: ``sgd_influence.run(...)`` runs the whole pipeline and returns its output
folder, ``sgd_influence.scores(out, method, seed=None)`` reads a ranking (averaged over
trials, or one trial's), ``sgd_influence.Config`` is the configuration (see
:mod:`sgd_influence.api`). They are imported on first use, so ``import sgd_influence``
does not load the pipeline.
"""

__version__ = "0.1.0"

# the built-in networks and influence methods register themselves on import
from . import methods, models  # noqa: E402,F401

_LAZY = ("Config", "run", "scores")


def __getattr__(name: str):
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
