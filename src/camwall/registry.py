"""A name -> object registry; every entry carries its own name (like timm's ``register_model``).

One registration style for every registry: ``REG.add(obj)``, also usable as a bare decorator.
The name is read from the object by the registry's ``key`` (default: its ``name`` attribute), so
it is written once, where the object is defined. One registry feeds both the CLI choices and the
parametrized tests::

    METHODS = Registry("CAM method")

    @METHODS.add
    class GradCAM(CamMethod, name="gradcam"): ...

    METRICS.add(Metric("wall_leakage", ...))

    METHODS.get("gradcam")          # the class
    METHODS.names()                 # names in registration order
    METHODS.names("grad*")          # fnmatch filter
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from camwall.errors import CamwallError, did_you_mean

__all__ = ["Registry", "function_name"]

T = TypeVar("T")


def _name_attribute(obj: Any) -> str:
    return str(getattr(obj, "name", "") or "")


def function_name(fn: Callable[..., Any]) -> str:
    """A registry key for builder functions: ``fashion_vgg`` -> ``"fashion-vgg"`` (as timm)."""
    return fn.__name__.replace("_", "-")


class Registry(Generic[T]):
    """An ordered mapping from names to objects, with helpful errors for unknown names.

    Args:
        kind: what the entries are, used in error messages (e.g. ``"CAM method"``).
        key: how an entry's name is read from it; default: its ``name`` attribute.
    """

    def __init__(self, kind: str, key: Callable[[T], str] = _name_attribute) -> None:
        self.kind = kind
        self._key = key
        self._entries: dict[str, T] = {}

    def add(self, obj: T) -> T:
        """Register ``obj`` under its own name and return it unchanged (so it can decorate).

        Raises:
            TypeError: the object has no name (a programming error).
            KeyError: the name is already registered.
        """
        name = self._key(obj)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a non-empty name to be registered: {obj!r}")
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

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
