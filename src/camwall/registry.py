"""A name -> object registry filled by decorators (like timm's ``register_model``).

One registry feeds both the CLI choices and the parametrized tests::

    METHODS = Registry("CAM method")

    @METHODS.register("gradcam")
    class GradCAM: ...

    METHODS.get("gradcam")          # the class
    METHODS.names()                 # sorted names
    METHODS.names("grad*")          # fnmatch filter
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from camwall.errors import CamwallError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from names to objects, with helpful errors for unknown names.

    Args:
        kind: what the entries are, used in error messages (e.g. ``"CAM method"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name`` and returns it unchanged."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; a name can be registered only once."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the entry called ``name``, or raise :class:`CamwallError` with a suggestion."""
        try:
            return self._entries[name]
        except KeyError:
            raise CamwallError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                f"Choose from: {', '.join(self._entries)}."
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Names in registration order, filtered by an ``fnmatch`` pattern."""
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
