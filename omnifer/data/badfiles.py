"""The ``on_bad_files`` policy, one implementation for readers and pools.

``error`` raises a one-line error naming the item and the fix; ``warn`` logs the first few and
drops; ``skip`` drops silently. Every dropped item is counted, and the first ``keep`` are kept
for the run's manifest.
"""

from __future__ import annotations

import logging
from typing import Any

from omnifer.errors import OmniferError

log = logging.getLogger(__name__)

ON_BAD_FILES: tuple[str, ...] = ("error", "warn", "skip")
MAX_WARNINGS = 20  #: ``warn`` logs this many items, then one line with the rest's count


def check_policy(value: str) -> str:
    """``value`` as a policy name, or a one-line error listing the valid ones."""
    key = str(value).strip().lower()
    if key not in ON_BAD_FILES:
        raise OmniferError(
            f"on_bad_files={value!r} is not a policy; use one of {', '.join(ON_BAD_FILES)}"
        )
    return key


class BadFiles:
    """Applies a policy to bad items (anything with a readable ``str``) and records them."""

    def __init__(self, policy: str, *, fix: str, what: str = "bad item",
                 keep: int | None = None) -> None:
        self.policy = check_policy(policy)
        self.fix = fix  #: the end of the ``error`` message: how to mend or skip
        self.what = what  #: how the summary line names the items
        self.keep = keep  #: items kept in :attr:`items` (None: all); the count is always exact
        self.items: list[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        if self.policy == "error":
            raise OmniferError(f"{item}; {self.fix}")
        if self.policy == "warn" and self.count < MAX_WARNINGS:
            log.warning("skipping %s", item)
        self.count += 1
        if self.keep is None or len(self.items) < self.keep:
            self.items.append(item)

    def earlier(self, items: list[Any]) -> None:
        """Keep ``items`` that an earlier invocation of the run dropped (ahead of this one's,
        within ``keep``): they are neither checked nor counted again."""
        self.items = [*items, *self.items][:self.keep]

    def close(self, where: str = "") -> None:
        """Under ``warn``, one line for the items that were not logged one by one."""
        if self.policy == "warn" and self.count > MAX_WARNINGS:
            log.warning("%sskipped %d more %ss (%d in all)", f"{where}: " if where else "",
                        self.count - MAX_WARNINGS, self.what, self.count)
