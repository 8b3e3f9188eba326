"""Shared fixtures: nnabla's global context restored after every test; the package's
log records captured."""

from __future__ import annotations

import logging

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


class LogRecords(logging.Handler):
    """Records of the package's loggers (the command line replaces the root logger's
    handlers, so pytest's caplog does not see what a main() logs)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def at(self, level) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]

    def at_least(self, level) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def clear(self):
        self.records.clear()


@pytest.fixture
def logs():
    h = LogRecords()
    pkg = logging.getLogger("sgd_influence")
    pkg.addHandler(h)
    yield h
    pkg.removeHandler(h)


def _plain(value):
    """``value`` with numpy scalars and tuples as plain Python numbers and lists (what
    pytest-xdist can send from a worker)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


@pytest.fixture
def record_property(record_property):
    """pytest's record_property, taking numpy numbers too."""
    def record(name, value):
        record_property(name, _plain(value))
    return record
