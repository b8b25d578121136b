"""The one user-facing error type: caught in the CLI, printed as one line, exit 2 (README: exit codes)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DevicelabError(Exception):
    """Bad input or a state the user must fix. Never a bug: bugs keep their tracebacks."""


class UnknownNameError(DevicelabError):
    def __init__(self, what: str, name: str, allowed: Iterable[str]) -> None:
        super().__init__(unknown_name_message(what, name, allowed))


def unknown_name_message(what: str, name: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {what} '{name}'{hint}; allowed: {', '.join(allowed)}"
