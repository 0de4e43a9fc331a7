"""User-facing errors.

A :class:`DiginError` is a problem with the user's input or environment that has a known fix. The runner prints
it as one line (``digin: error: <message>``), exits non-zero and never shows a traceback for it. Anything else is
a bug and keeps its traceback in the job log.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


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


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "0").strip().lower() not in ("", "0", "false", "no", "off")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def why_not_downloaded() -> str:
    """Why weights missing from the local cache could not be fetched, for the one-line loading errors."""
    return "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached (check HF_HUB_OFFLINE / network)"


def load_error(source: str, err: BaseException, *, what: str, fix: str, local_what: str | None = None,
               local_fix: str, pronoun: str = "them") -> DiginError:
    """The one line for weights that ``from_pretrained`` (or the like) could not load from ``source``.

    A path that exists gets the loader's own reason and ``local_fix`` ("cannot load <local_what> from folder '...'
    (OSError: ...) — <local_fix>"); anything else is a hub id that is not in the local cache while the hub is off or
    unreachable ("cannot load <what> '<id>': not in the local Hugging Face cache and <why> — download <pronoun> once
    with network access (HF_HUB_OFFLINE=0), <fix>").
    """
    path = os.path.expanduser(str(source))
    if os.path.exists(path):
        first = str(err).splitlines()[0] if str(err) else ""
        where = "from folder" if os.path.isdir(path) else "from"
        return DiginError(f"cannot load {local_what or what} {where} '{source}' ({type(err).__name__}: {first}) — "
                          f"{local_fix}")
    return DiginError(f"cannot load {what} '{source}': not in the local Hugging Face cache and {why_not_downloaded()}"
                      f" — download {pronoun} once with network access (HF_HUB_OFFLINE=0), {fix}")


@contextmanager
def hub_loading(source: str, *, what: str, fix: str, local_what: str | None = None, local_fix: str,
                pronoun: str = "them", failed: Callable[[BaseException], bool] | None = None) -> Iterator[None]:
    """Run the ``from_pretrained`` calls of one model inside; their failures (missing files, offline hub, malformed
    repo id: OSError / ValueError) become :func:`load_error`'s one line. DiginErrors raised inside pass as they are.

    ``failed`` replaces that test for loaders that report a failed fetch otherwise (open_clip re-raises it as a
    RuntimeError): it says which exceptions are "could not load"; any other keeps its traceback."""
    try:
        yield
    except DiginError:
        raise
    except Exception as err:
        if not (failed(err) if failed is not None else isinstance(err, (OSError, ValueError))):
            raise
        raise load_error(source, err, what=what, fix=fix, local_what=local_what, local_fix=local_fix,
                         pronoun=pronoun) from None


def user_error_in(err: BaseException | None) -> DiginError | None:
    """The first DiginError in an exception's cause/context chain (Hydra's instantiate wraps what a target raises)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DiginError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def instantiate(cfg, **kwargs):
    """``hydra.utils.instantiate`` that lets a DiginError raised by the target through as itself, one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = user_error_in(err)
        if cause is not None:
            raise cause from None
        raise


def suggest_key(dotted: str, cfg) -> str:
    """' (did you mean task.classes?)' for a mistyped dotted config key, from the keys at the level where it
    leaves ``cfg`` (any nested mapping, e.g. the composed DictConfig); '' when nothing is close."""
    parts = dotted.lstrip("+~").split(".")
    node = cfg
    for depth, part in enumerate(parts):
        keys = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
        if part in keys and depth < len(parts) - 1:
            try:
                node = node[part]
                continue
            except Exception:  # a mandatory '???' leaf: no keys below it
                return ""
        close = difflib.get_close_matches(part, [k for k in keys if k != part], n=1, cutoff=0.6)
        full = [".".join([*parts[:depth], c, *parts[depth + 1:]]) for c in close]
        return f" (did you mean {full[0]}?)" if full else ""
    return ""
