"""Registered networks (see :mod:`sgd_influence.registry`): a name -> a factory that makes
the :class:`~.base.Model` of a spec. A network is added by one new module that decorates
its factory with :func:`register`; ``--model NAME`` then finds it. ``--model
path/to/file.py:function`` (or ``module:function``) is a user network (see :mod:`.user`).
"""

from __future__ import annotations

from .. import registry as _registry
from ..identities import check_model

register = _registry.models.register


class ModelError(ValueError):
    """A network that cannot be used (one line naming the network and what is wrong)."""


def names() -> tuple[str, ...]:
    """The registered networks, in registration order."""
    return _registry.models.names()


def check_name(arch: str) -> None:
    check_model(arch, names())


def factory(arch: str):
    return _registry.models.get(arch)
