"""``StageConfig``: the one config pattern of every stage.

A stage's config is a frozen dataclass whose field defaults are the only place a default is
written. CLI flags and TOML files fill the same class: ``Config.from_toml(path)`` reads a file
(a ``[<section>]`` table or top-level keys), ``config.replace(**flags)`` applies flags, where
``None`` means "not given" and keeps the value. Validation lives in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from omnifer.errors import OmniferError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

C = TypeVar("C", bound="StageConfig")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base of the stage configs; subclasses are frozen dataclasses and set ``section``."""

    section: ClassVar[str] = ""  #: TOML table name, e.g. "train", "mine"
    noun: ClassVar[str] = ""  #: what messages call the options, e.g. "training" (default: section)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``; ``None`` values (unset flags) change nothing."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise OmniferError(
                f"unknown {self.noun or self.section or 'config'} option(s) {', '.join(unknown)}; valid: "
                + ", ".join(self.field_names())
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_toml(cls: type[C], path: str | os.PathLike | None) -> C:
        """Defaults updated from a TOML file (``None``: the defaults). Keys are field names,
        top level or in a ``[<section>]`` table."""
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise OmniferError(f"cannot read {cls.noun or cls.section or 'a'} config {path}: "
                               f"{' '.join(str(exc).split())}; fix the file") from None
        return cls().replace(**data.get(cls.section, data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """The config a manifest recorded; unknown keys (older or newer versions) are ignored."""
        known = set(cls.field_names())
        return cls(**{k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in data.items() if k in known})
