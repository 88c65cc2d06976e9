"""One registry helper for every swappable part: backbones, readers, pool sources, distillation
methods, coresets, engines. Unknown names fail with one line that lists the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from omnifer.errors import OmniferError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def red(): return "#f00"
    >>> colours.get("red")()
    '#f00'
    """

    def __init__(self, kind: str, *, fix: str = "") -> None:
        self.kind = kind
        self.fix = fix  #: appended to the unknown-name error, e.g. "pass --source NAME"
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``registry.register("name", obj)``, or ``@registry.register("name")`` as a decorator."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def decorate(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorate

    def _add(self, name: str, entry: T) -> None:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            fix = f"; {self.fix}" if self.fix else ""
            raise OmniferError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}{fix}"
            ) from None

    def check(self, name: str) -> str:
        """``name`` if it is registered, else the one-line error of :meth:`get`."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
