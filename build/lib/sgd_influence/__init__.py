"""SGD-influence data cleansing on nnabla (Hara et al. 2019; last-weight approximation)."""

__version__ = "0.1.0"

# the built-in networks and influence methods register themselves on import
from . import methods, models  # noqa: E402,F401
