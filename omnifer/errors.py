"""Errors a user can act on.

An ``OmniferError`` carries a one-line message that says what was wrong, the value seen and
the fix. The CLI prints it as a single line; everything else is a bug and gets a traceback.
"""


class OmniferError(Exception):
    """A known, user-facing error: one line naming the problem and the fix."""


class ConfigMismatchError(OmniferError):
    """A resume or a combination of inputs would mix outputs made with different configs."""


def one_line(exc: BaseException | str) -> str:
    """An exception's message squeezed onto one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
