"""One exception hierarchy for fexstack.

Every error a user can cause or meet carries a message (what happened, naming the file,
key, package or command involved) and a hint (what to do about it). They are caught
once, at the edge of a doit action or of a command-line entry point, and printed by
:func:`format_error`; everywhere else they simply propagate.
"""

from __future__ import annotations


class FexstackError(Exception):
    """Base of every error fexstack reports to a user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class ConfigError(FexstackError):
    """A stack, repos or base file is missing, malformed or inconsistent."""


class ToolError(FexstackError):
    """An external tool failed; carries the command, its exit code and stderr's end."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        argv: list[str] | None = None,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class LockError(FexstackError):
    """Resolution failed, or a lock file is malformed."""


class FetchError(FexstackError):
    """A package could not be downloaded or verified."""


class StageError(FexstackError):
    """A payload could not be extracted safely into a staging tree."""


class CheckError(FexstackError):
    """Invariants found violations that no waiver accounts for."""


class ImageError(FexstackError):
    """An image could not be built, read back, or validated."""


class RunError(FexstackError):
    """An AppImage could not be prepared or run."""


class RegistryError(FexstackError):
    """An OCI registry could not be reached, refused a request, or sent something else
    than what was asked for (a digest mismatch, an artifact of another kind)."""


def format_error(err: FexstackError) -> str:
    """The text shown to a user for ``err``: ``error: message`` then ``hint: ...``."""
    kind = type(err).__name__
    lines = [f"error ({kind}): {err.message}"]
    if err.hint:
        lines.append(f"hint: {err.hint}")
    return "\n".join(lines)
