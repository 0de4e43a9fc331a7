"""Per-item outputs of a run: images, captioned strips, metrics and the run's summary CSV.

All files go through :mod:`digin_cli.io.atomic`. An item's ``metrics.json`` is written last, so its presence means
the item finished; a re-run of a sweep asks :meth:`Writer.is_done` and skips such items instead of rewriting them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from digin_cli.io.atomic import atomic_save_image, atomic_write_json, atomic_write_text, tensor_to_pil

METRICS = "metrics.json"
MAX_TILE_HEIGHT = 256  # larger images are shrunk so a strip of several stays viewable
MIN_TILE_HEIGHT = 128  # smaller ones (tiny test models are 32-64 px) are enlarged so they can be seen
PAD = 6
FONT_SIZE = 13
_SLUG_MAX = 100  # well under the usual 255-byte file name limit, leaving room for suffixes


def slug(text: Any) -> str:
    """Filesystem-safe, readable name: ``'Red Fox'`` -> ``'red_fox'``, ``'café/crème'`` -> ``'cafe_creme'``.

    Different inputs can map to the same slug ('a/b', 'a b'); callers that need uniqueness add a distinguishing part.
    """
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9._-]+", "_", text)
    text = re.sub(r"_+", "_", text).strip("._-")  # no leading '.': hidden files and '..' stay impossible
    return text[:_SLUG_MAX].rstrip("._-") or "_"


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit_height(image: Image.Image) -> Image.Image:
    w, h = image.size
    if h > MAX_TILE_HEIGHT:
        new_h = MAX_TILE_HEIGHT
        resample = Image.Resampling.LANCZOS
    elif h < MIN_TILE_HEIGHT:
        # Whole-number nearest upscaling keeps pixels crisp, so a 64 px sample is shown as true 2x2 blocks.
        new_h = h * -(-MIN_TILE_HEIGHT // h)
        resample = Image.Resampling.NEAREST
    else:
        return image
    return image.resize((max(1, round(w * new_h / h)), new_h), resample)


def render_strip(images: Sequence[Any], captions: Sequence[str], title: str | None = None) -> Image.Image:
    """Lay ``images`` out left to right on white, each with its (possibly multi-line) caption underneath.

    A tile is as wide as its image or its caption, whichever is wider, plus ``PAD`` each side; the strip is
    exactly the tiles side by side (widened only if ``title`` is longer than that).
    """
    if not images:
        raise ValueError("render_strip needs at least one image")
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        if not text:
            return 0, 0
        left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=font, spacing=2)
        return right, bottom

    tiles = [_fit_height(tensor_to_pil(im).convert("RGB")) for im in images]
    sizes = [text_size(c) for c in captions]
    widths = [max(t.width, tw) + 2 * PAD for t, (tw, _) in zip(tiles, sizes)]
    image_h = max(t.height for t in tiles)
    caption_h = max(th for _, th in sizes)
    title_w, title_h = text_size(title or "")
    top = PAD + (title_h + PAD if title else 0)
    width = max(sum(widths), title_w + 2 * PAD)
    height = top + image_h + (PAD + caption_h if caption_h else 0) + PAD

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.multiline_text((PAD, PAD), title, fill="black", font=font, spacing=2)
    x = 0
    for tile, caption, w in zip(tiles, captions, widths):
        canvas.paste(tile, (x + (w - tile.width) // 2, top))
        if caption:
            # Captions share one baseline under the tallest image so numbers line up across tiles.
            draw.multiline_text((x + PAD, top + image_h + PAD), caption, fill="black", font=font, spacing=2)
        x += w
    return canvas


def render_grid(rows: Sequence[tuple[Sequence[Any], Sequence[str]]], titles: Sequence[str | None] | None = None,
                title: str | None = None) -> Image.Image:
    """Stack captioned strips (:func:`render_strip`, one per ``(images, captions)`` row) top to bottom, left-aligned,
    each under its row title; ``title`` heads the whole grid. Rows may hold different numbers of images (e.g.
    generated images above the real images that activate a neuron most)."""
    if not rows:
        raise ValueError("render_grid needs at least one row")
    titles = list(titles) if titles is not None else [None] * len(rows)
    if len(titles) != len(rows):
        raise ValueError(f"got {len(rows)} rows but {len(titles)} row titles")
    strips = [render_strip(images, captions, row_title) for (images, captions), row_title in zip(rows, titles)]
    font = _font()
    title_w = title_h = 0
    if title:
        _, _, title_w, title_h = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox(
            (0, 0), title, font=font, spacing=2)
    top = title_h + 2 * PAD if title else 0
    width = max(max(s.width for s in strips), title_w + 2 * PAD)
    canvas = Image.new("RGB", (width, top + sum(s.height for s in strips)), "white")
    if title:
        ImageDraw.Draw(canvas).multiline_text((PAD, PAD), title, fill="black", font=font, spacing=2)
    y = top
    for strip in strips:
        canvas.paste(strip, (0, y))
        y += strip.height
    return canvas


class Writer:
    """Writes a run's files under ``root``; the caller decides the layout via :meth:`item_dir`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stamp: dict = {}
        """Entries added to every metrics.json (the run sets the config hash that resuming checks)."""

    def item_dir(self, *parts: Any) -> Path:
        """``root/slug(part)/...``; not created until something is written into it."""
        return self.root.joinpath(*(slug(p) for p in parts))

    @staticmethod
    def is_done(item_dir: str | Path) -> bool:
        """True when ``item_dir/metrics.json`` exists and holds a JSON object (a torn or empty file does not count)."""
        try:
            return isinstance(json.loads((Path(item_dir) / METRICS).read_text("utf-8")), dict)
        except (OSError, ValueError):
            return False

    def save_image(self, item_dir: str | Path, name: str, image: Any) -> Path:
        """Save a tensor/PIL image as ``item_dir/name`` (``.png`` added when ``name`` has no suffix)."""
        return atomic_save_image(Path(item_dir) / _filename(name), image)

    def save_metrics(self, item_dir: str | Path, metrics: dict) -> Path:
        """Write ``metrics.json``; call it after the item's other files since it marks the item as done."""
        return atomic_write_json(Path(item_dir) / METRICS, {**metrics, **self.stamp})

    def save_strip(
        self,
        item_dir: str | Path,
        name: str,
        images: Sequence[Any],
        captions: Sequence[str],
        title: str | None = None,
    ) -> Path:
        """Save a captioned horizontal strip (see :func:`render_strip`) as a PNG."""
        return atomic_save_image(Path(item_dir) / _filename(name), render_strip(images, captions, title))

    def save_grid(
        self,
        item_dir: str | Path,
        name: str,
        rows: Sequence[tuple[Sequence[Any], Sequence[str]]],
        titles: Sequence[str | None] | None = None,
        title: str | None = None,
    ) -> Path:
        """Save rows of captioned strips (see :func:`render_grid`) as one PNG."""
        return atomic_save_image(Path(item_dir) / _filename(name), render_grid(rows, titles, title))

    def write_summary(self, rows: Sequence[dict], name: str = "summary.csv") -> Path:
        """Write ``rows`` as a CSV at the root; the header is the union of keys in first-seen order."""
        header: dict[str, None] = {}
        for row in rows:
            header.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(header), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(self.root / name, buffer.getvalue())

    def read_summary(self, name: str = "summary.csv") -> list[dict[str, str]]:
        """Rows of a summary CSV as strings (missing cells are ''); [] when it has not been written yet."""
        path = self.root / name
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def _filename(name: str) -> str:
    return name if Path(name).suffix else f"{name}.png"
