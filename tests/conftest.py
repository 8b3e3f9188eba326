"""Shared fixtures: every test leaves nnabla's global context as it found it."""

from __future__ import annotations

import nnabla as nn
import pytest


@pytest.fixture(autouse=True)
def _restore_nnabla_context():
    """Command-line entry points set the global context (cuDNN where it is installed);
    put the previous one back after each test, so later tests run where they expect."""
    saved = nn.get_current_context()
    try:
        yield
    finally:
        nn.set_default_context(saved)
