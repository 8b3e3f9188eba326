"""Registered networks (see :mod:`sgd_influence.registry`): a name -> a factory that makes
the :class:`~.base.Model` of a spec. A network is added by one new module that decorates
its factory with :func:`register`; ``--model NAME`` then finds it. ``--model
path/to/file.py:function`` (or ``module:function``) is a user network (see :mod:`.user`).
"""

from __future__ import annotations

from .. import registry as _registry

register = _registry.models.register


class ModelError(ValueError):
    """A network that cannot be used (one line naming the network and what is wrong)."""


def names() -> tuple[str, ...]:
    """The registered networks, in registration order."""
    return _registry.models.names()


def is_user(arch: str) -> bool:
    return ":" in arch


def check_name(arch: str) -> None:
    if arch not in _registry.models and not is_user(arch):
        raise ValueError(f"--model: expected one of {', '.join(names())} or FILE.py:FUNCTION, "
                         f"got {arch!r}")


def factory(arch: str):
    return _registry.models.get(arch)
