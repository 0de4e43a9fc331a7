"""The PIL loss chart: each series is drawn in its colour, gaps for missing values, flat series survive."""

import math

from digin_cli.io.plots import COLOURS, line_chart


def _has_colour(image, colour):
    return any(pixel == colour for pixel in image.getdata())


def test_line_chart_draws_each_series_and_skips_missing_values():
    image = line_chart({"loss": [3.0, 2.0, 1.5, 1.0], "train": [None, 2.5, math.nan, 1.2]}, title="t")
    assert image.size == (480, 300)
    assert _has_colour(image, COLOURS[0]) and _has_colour(image, COLOURS[1])
    flat = line_chart({"loss": [1.0, 1.0]})
    assert _has_colour(flat, COLOURS[0])
