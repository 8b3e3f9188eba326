"""Random: the training samples in a seeded random order (the control)."""

from __future__ import annotations

import numpy as np

from .base import Context, register


def random_scores(n: int, seed: int) -> np.ndarray:
    """Seeded uniform scores: sorted, they put the samples in a random order."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D])).random(n)


class Random:
    name, color, needs = "Random", "tab:green", "nothing"

    def settings(self, cfg) -> dict:
        return {}

    def scores(self, ctx: Context):
        return random_scores(ctx.data.n_train, ctx.seed), {}


register(Random())
