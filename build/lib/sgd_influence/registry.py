"""Named plug-ins: the networks and the influence methods the project knows.

A network module registers a factory ``factory(spec) -> Model`` under its name; an
influence-method module registers its :class:`~sgd_influence.methods.base.Method`. The
command line's choices, the plan's order, the figures' colours and the analysis tables
read the names from here, in registration order. The package registers its own
networks and methods on import; a test or a user adds one by calling ``register``.
"""

from __future__ import annotations


class Registry:
    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, object] = {}

    def register(self, name: str, item=None):
        """``register(name, item)``, or as a decorator ``@register(name)``."""
        if item is None:
            return lambda obj: self.register(name, obj)
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str):
        if name not in self._items:
            raise KeyError(f"unknown {self.what} {name!r} (known: {', '.join(self._items)})")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def rank(self, name: str) -> int:
        """Position in registration order (-1 for an unknown name)."""
        names = self.names()
        return names.index(name) if name in names else -1


models = Registry("network")
methods = Registry("influence method")
