"""How real images enter a task (vce, neuron, neuron_cf, npca, spurious): the centre crop fraction, and the check,
before any item runs, that every input file decodes (``task.skip_unreadable`` leaves the bad ones out instead)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from digin_cli.context import RunContext
from digin_cli.data.images import CROP_FRACTION, verify_images


def crop_fraction(ctx: RunContext) -> float:
    """``task.crop_fraction``: the share of an image's shorter side the centre crop keeps (DiG-IN: 0.8)."""
    return float(ctx.cfg.task.get("crop_fraction", CROP_FRACTION))


def skip_unreadable(ctx: RunContext) -> bool:
    return bool(ctx.cfg.task.get("skip_unreadable", False))


def checked_files(ctx: RunContext, files: Sequence[Path], what: str) -> list[Path]:
    """``files`` (to be streamed later, e.g. feature statistics) decode-checked now; the readable ones, in order."""
    return verify_images(files, f"remove or replace those files ({what})", skip_unreadable(ctx), ctx.skipped)


def skipped_rows(ctx: RunContext) -> list[dict]:
    """summary.csv rows of the skipped inputs (``status=skipped``, the reason as ``error``)."""
    return [{"image": Path(p).name, "path": str(p), "status": "skipped", "error": reason}
            for p, reason in ctx.skipped]
