"""Name -> factory registries: the one way every extension point is extended.

Each extension point (datasets, models, partitioners, strategies, attacks, ...) owns one `Registry`,
and there is one way to add to it: the decorator `@REGISTRY.register("name")` (called as a function,
`REGISTRY.register("name")(obj)`, for instances). Names are snake_case. Unknown names raise
`ValueError` listing the known ones, so a typo in a config fails with the fix in the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
NAME = re.compile(r"[a-z][a-z0-9_]*")


class Registry(Generic[T]):
    """A named collection of factories (or classes) for one extension point."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REG.register("name")` adds the decorated object under `name`."""

        if not NAME.fullmatch(name):
            raise ValueError(f"{self.kind} name {name!r} must be snake_case (lower-case letters, digits, _)")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise ValueError listing known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ValueError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def unregister(self, name: str) -> None:
        """Remove `name` (tests and plugin reloads); unknown names are ignored."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
