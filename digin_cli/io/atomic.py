"""Crash-safe file writes.

Every output file is written to a hidden temp file in the target directory, flushed and fsynced, then renamed
over the target with :func:`os.replace`. A reader (or a resumed sweep) therefore sees either the old file or the
complete new one, never a truncated PNG or half a JSON document; a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from PIL import Image

# The temp file is created 0600; read once so finished files get the usual umask-derived mode instead.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(tmp.fileno(), 0o666 & ~_UMASK)
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; best effort because not every platform/filesystem allows it.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; returns the path."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Return ``obj`` with non-finite floats as ``None`` and 0-d tensors / numpy scalars as Python numbers.

    Python's json writes NaN/Infinity, which is not JSON; strict readers (jq, JS, pandas' default engine) reject it.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):
        return to_jsonable(obj.item())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as strict JSON (indent 2, key order kept, NaN/inf as null)."""
    # Serialise before touching the disk so an unserialisable object never creates even a temp file.
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def tensor_to_pil(image: Any) -> Image.Image:
    """Convert a float tensor ``(3,H,W)``/``(1,3,H,W)`` (or ``(1,H,W)`` grey) in ``[0,1]`` to a PIL image.

    PIL images pass through. Values are clamped and rounded, so ``k/255`` maps back to exactly ``k``.
    """
    if isinstance(image, Image.Image):
        return image
    import torch  # deferred: keeps `digin --help` and PIL-only callers from paying for torch

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or PIL.Image, got {type(image).__name__}")
    x = image.detach()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3,H,W) or (1,3,H,W), got {tuple(image.shape)}")
    x = torch.nan_to_num(x.float().cpu(), nan=0.0).clamp(0, 1).mul(255).round().to(torch.uint8)
    array = x.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0], "L") if x.shape[0] == 1 else Image.fromarray(array, "RGB")


def atomic_save_image(path: str | os.PathLike, image: Any) -> Path:
    """Atomically save a tensor or PIL image; the format follows the suffix, PNG when it is unknown."""
    pil = tensor_to_pil(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt)
    return atomic_write_bytes(path, buffer.getvalue())
