"""Names of the DSA operations and strategies (see :mod:`omnifer.distill.augment`).

No torch here: configs and function signatures use these names without loading it.
"""

from __future__ import annotations

from collections.abc import Iterable

from omnifer.errors import OmniferError

#: All operations, in the order they are applied.
OPERATIONS = ("color", "flip", "scale", "rotate", "crop", "cutout")
#: The default strategy (faces: flips are label-preserving).
DEFAULT_STRATEGY = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: The default without flips (digits, text, anything with a handedness).
NO_FLIP_STRATEGY = ("color", "crop", "cutout", "scale", "rotate")


def parse_strategy(strategy: str | Iterable[str] | None) -> tuple[str, ...]:
    """Operation names from "color_crop_cutout", ["color", "crop"], None or "none"."""
    if strategy is None:
        return ()
    names = strategy.replace(",", "_").split("_") if isinstance(strategy, str) else list(strategy)
    names = [n.strip().lower() for n in names if n.strip() and n.strip().lower() != "none"]
    bad = [n for n in names if n not in OPERATIONS]
    if bad:
        raise OmniferError(
            f"unknown augmentation {bad[0]!r}; choose from {', '.join(OPERATIONS)} "
            "(joined by '_') or 'none'"
        )
    return tuple(n for n in OPERATIONS if n in names)
