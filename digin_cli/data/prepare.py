"""One image file -> the tensor a task works on, and the decode check of many files.

Every image goes through :func:`preprocess`, the DiG-IN authors' preparation for Stable Diffusion at 512 px scaled
to any resolution ``R``: the shorter side is resized to ``round(R / crop_fraction)`` (the authors' 0.8: 640 for 512,
80 for 64) with bicubic interpolation, then the centre ``R x R`` is cropped. ``crop_fraction`` (``task.crop_fraction``)
is the share of the shorter side kept: 0.8 is DiG-IN's ImageNet convention; 1.0 keeps the whole shorter side (a
square image is then only resized), for images framed tightly around their object (CIFAR, CUB crops, product photos).
Exactly, for a ``w x h`` image with ``h <= w`` (and likewise transposed), as torchvision's ``Resize(s)`` +
``CenterCrop(R)`` do on a PIL image:

- ``s = round(R / crop_fraction)``; new size ``(int(s * w / h), s)`` (the longer side is truncated, not rounded);
- resampling is PIL's ``Image.resize(..., BICUBIC)``, which is antialiased (its kernel widens when shrinking);
- the crop starts at ``top = int(round((s - R) / 2))``, ``left = int(round((int(s * w / h) - R) / 2))``;
- the result is the crop's uint8 RGB values divided by 255, shaped ``(1, 3, R, R)``, float32 on the CPU.

Before that every image becomes RGB: grayscale, CMYK and palette images by ``Image.convert("RGB")``; images with
transparency (RGBA, LA, PA, palette with a transparent colour) are first composited over white, so transparent
areas read as white rather than as whatever colour happens to be stored under them.

:func:`decode` reads a file fully (truncated data fails there, not later); :func:`verify_images` decode-checks
many files at once and :func:`unreadable_error` reports every unreadable one in one line (the first few and the
count).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from digin_cli.errors import DiginError

CROP_FRACTION = 0.8  # DiG-IN's centre crop: the shorter side resized to R / 0.8 (640 for 512), the centre R kept


def short_side(resolution: int, crop_fraction: float = CROP_FRACTION) -> int:
    """Length the shorter side is resized to before the centre crop: ``round(resolution / crop_fraction)``
    (``round(resolution * 640 / 512)`` at the authors' 0.8)."""
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    return max(int(resolution), round(resolution / crop_fraction))


def _to_rgb(pil: Image.Image) -> Image.Image:
    has_alpha = pil.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (pil.mode == "P" and "transparency" in pil.info)
    if has_alpha:
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def preprocess(pil: Image.Image, resolution: int, crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """PIL image -> ``(1, 3, R, R)`` float tensor in [0, 1]: RGB, shorter side to ``short_side(R, crop_fraction)``,
    centre crop.

    See the module docstring for the exact sizes and offsets.
    """
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    resolution = int(resolution)
    rgb = _to_rgb(pil)
    resized = TF.resize(rgb, [short_side(resolution, crop_fraction)], interpolation=InterpolationMode.BICUBIC,
                        antialias=True)
    cropped = TF.center_crop(resized, [resolution, resolution])
    return (TF.pil_to_tensor(cropped).to(torch.float32) / 255.0).unsqueeze(0)



def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Unreadable(Exception):
    """An image file that cannot be decoded; ``reason`` is one short line."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def decode(path: Path, resolution: int | None, crop_fraction: float = CROP_FRACTION) -> torch.Tensor | None:
    """Decode ``path`` fully (so truncated files fail here, not later) and preprocess it; ``resolution=None`` only
    checks (JPEGs in draft mode: every coefficient is still read, the full-size image never built)."""
    try:
        if path.stat().st_size == 0:
            raise Unreadable(path, "empty file")
        with Image.open(path) as pil:
            if resolution is None:
                pil.draft("RGB", (64, 64))
            pil.load()
            return None if resolution is None else preprocess(pil, resolution, crop_fraction)
    except UnidentifiedImageError:
        reason = "not a recognised image format"
    except Image.DecompressionBombError as e:
        reason = _one_line(e)
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated / damaged data, unreadable file
        reason = _one_line(e) or type(e).__name__
    raise Unreadable(path, reason)


def unreadable_error(bad: Sequence[tuple[Path, str]], fix: str, shown: int = 5) -> DiginError:
    """One line for every unreadable file at once: the first ``shown`` with their reasons, and the count."""
    listed = "; ".join(f"{p} ({reason})" for p, reason in bad[:shown])
    more = f"; … and {len(bad) - shown} more" if len(bad) > shown else ""
    what = "image" if len(bad) == 1 else f"{len(bad)} images:"
    return DiginError(f"cannot read {what} {listed}{more} — {fix}, or pass task.skip_unreadable=true to skip "
                      f"{'it' if len(bad) == 1 else 'them'} (listed in summary.csv)")


def read_all(paths: Sequence[Path], resolution: int, crop_fraction: float, fix: str, skip: bool,
              skipped: list | None) -> dict[Path, torch.Tensor]:
    """Every path decoded and preprocessed; the unreadable ones raise together, or (``skip``) go to ``skipped``."""
    good: dict[Path, torch.Tensor] = {}
    bad: list[tuple[Path, str]] = []
    for p in paths:
        try:
            good[p] = decode(p, resolution, crop_fraction)
        except Unreadable as e:
            bad.append((p, e.reason))
    if bad and not skip:
        raise unreadable_error(bad, fix)
    if skipped is not None:
        skipped.extend(bad)
    return good


def verify_images(paths: Sequence[Path], fix: str, skip: bool = False,
                  skipped: list | None = None) -> list[Path]:
    """Decode-check ``paths`` (no preprocessing, no model) before they are streamed; the readable ones, in order.

    Unreadable files raise one :func:`unreadable_error`, or with ``skip`` are appended to ``skipped`` as
    ``(path, reason)`` and left out.
    """
    bad: list[tuple[Path, str]] = []
    for p in paths:
        try:
            decode(Path(p), None)
        except Unreadable as e:
            bad.append((Path(p), e.reason))
    if bad and not skip:
        raise unreadable_error(bad, fix)
    if skipped is not None:
        skipped.extend(bad)
    dropped = {p for p, _ in bad}
    return [p for p in paths if Path(p) not in dropped]
