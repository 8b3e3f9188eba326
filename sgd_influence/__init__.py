"""SGD-influence data cleansing on nnabla (Hara et al. 2019; last-weight approximation)."""

__version__ = "0.1.0"
