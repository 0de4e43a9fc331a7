"""Small line charts drawn with PIL (no plotting library needed at run time): loss per optimisation step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def _font():
    try:
        return ImageFont.load_default(size=12)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def line_chart(series: dict[str, Sequence[float | None]], title: str = "", xlabel: str = "step",
               size: tuple[int, int] = (480, 300)) -> Image.Image:
    """One chart of named series over their index; non-finite or None values are skipped (gaps)."""
    width, height = size
    left, right, top, bottom = 56, 12, 26, 34
    image = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(image), _font()
    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max((len(ys) for ys in series.values()), default=1)
    span_x = max(n - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return (left + (width - left - right) * i / span_x, top + (height - top - bottom) * (hi - v) / (hi - lo))

    draw.rectangle((left, top, width - right, height - bottom), outline=(160, 160, 160))
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        y = xy(0, v)[1]
        draw.line((left - 4, y, left, y), fill=(120, 120, 120))
        draw.text((4, y - 6), f"{v:.3g}", fill="black", font=font)
    draw.text((left, height - bottom + 6), "0", fill="black", font=font)
    draw.text((width - right - 24, height - bottom + 6), str(n - 1), fill="black", font=font)
    draw.text(((width - 30) // 2, height - bottom + 14), xlabel, fill="black", font=font)
    draw.text((left, 6), title, fill="black", font=font)
    legend_x = width - right - 8
    for k, (name, ys) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        segment: list[tuple[float, float]] = []
        for i, v in enumerate(ys):
            if v is None or not math.isfinite(v):
                if len(segment) > 1:
                    draw.line(segment, fill=colour, width=2)
                segment = []
                continue
            segment.append(xy(i, v))
        if len(segment) > 1:
            draw.line(segment, fill=colour, width=2)
        elif len(segment) == 1:
            x, y = segment[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        text_w = draw.textlength(name, font=font)
        draw.text((legend_x - text_w, top + 4 + 14 * k), name, fill=colour, font=font)
    return image
