"""One on-disk cache of tensors, shared by the feature statistics and the DDIM inversions.

An entry is one ``<key>.safetensors`` file under ``root``: named tensors plus string metadata, whose ``format``
field names the layout (an entry of another format is a miss, so a layout change never serves stale data). Entries
are written whole to a temp file and renamed (:func:`atomic_write_bytes`), so a reader sees no entry or a complete
one and a crashed write leaves nothing; :meth:`TensorCache.once` holds a per-key ``filelock`` while computing, so a
second process (or thread) asking for the same key waits and then reuses the first one's result; should two writers
ever race anyway, the rename makes the last (identical) write win.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from digin_cli.io.atomic import atomic_write_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


class TensorCache:
    """``key`` -> ``<root>/<key>.safetensors``; subclasses set :attr:`format` and :attr:`what` and turn their
    objects into tensors + metadata (:meth:`write`) and back (:meth:`read`)."""

    format = "digin-tensors-v1"
    """Written into every entry's metadata; entries with another value are misses."""
    what = "tensor cache"
    """Named in the warning about an unreadable entry."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def read(self, key: str, names: tuple[str, ...] | None = None,
             ) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """The entry's tensors (``names``, or all; on CPU) and metadata, or None: no entry, another format, or an
        unreadable file (logged)."""
        from safetensors import SafetensorError, safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("format") != self.format:
                    return None
                tensors = {name: f.get_tensor(name) for name in (names if names is not None else f.keys())}
        except (OSError, KeyError, ValueError, SafetensorError) as err:
            self.unreadable(key, err)
            return None
        return tensors, meta

    def unreadable(self, key: str, err: BaseException) -> None:
        """Note an entry that exists but cannot be used (it is a miss and gets replaced by the next write)."""
        log.warning("ignoring unreadable %s entry %s (%s)", self.what, self.path(key), err)

    def write(self, key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
        """Atomically write (or replace) the entry for ``key``: float32 CPU copies of ``tensors``, ``metadata``."""
        from safetensors.torch import save

        data = {name: t.detach().float().cpu().contiguous() for name, t in tensors.items()}
        return atomic_write_bytes(self.path(key), save(data, metadata={**(metadata or {}), "format": self.format}))

    def once(self, key: str, lookup: Callable[[], T | None], compute: Callable[[], T], store: Callable[[T], object],
             ) -> T:
        """``lookup()``'s entry, or ``compute()``'s result after ``store``-ing it: one computation per key across
        processes (a per-key file lock, the entry looked up again once it is held)."""
        from filelock import FileLock

        found = lookup()
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{key}.lock")):
            found = lookup()  # another process may have finished it while we waited
            if found is not None:
                return found
            value = compute()
            store(value)
        return value
