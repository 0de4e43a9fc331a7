"""User-facing errors.

A :class:`DiginError` is a problem with the user's input or environment that has a known fix. The runner prints
it as one line (``digin: error: <message>``), exits non-zero and never shows a traceback for it. Anything else is
a bug and keeps its traceback in the job log.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DiginError(Exception):
    """An error with a one-line message that names the fix."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' for close matches of ``name`` among ``choices``, or ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        # Substring matches catch 'fox' -> 'red fox', which difflib's ratio misses.
        close = [c for c in lowered if name.lower() in c][:n]
    return f" (did you mean: {', '.join(repr(lowered[c]) for c in close)}?)" if close else ""
