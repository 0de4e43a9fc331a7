"""Writer: slugs, done-markers, images, captioned strips and the summary CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digin_cli.io.writer import MAX_TILE_HEIGHT, PAD, Writer, render_strip, slug


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("red fox", "red_fox"),
        ("Red  Fox", "red_fox"),
        ("seed_3", "seed_3"),
        (3, "3"),
        ("n01440764 tench, Tinca tinca", "n01440764_tench_tinca_tinca"),
        ("café/crème", "cafe_creme"),
        ("../../etc/passwd", "etc_passwd"),
        (".hidden", "hidden"),
        ("ViT-B/16 0.5", "vit-b_16_0.5"),
        ("!!!", "_"),
    ],
)
def test_slug(text, expected):
    assert slug(text) == expected


def test_slug_is_bounded():
    assert len(slug("x" * 1000)) <= 100


def test_item_dir_joins_slugged_parts_without_creating(tmp_path: Path):
    d = Writer(tmp_path).item_dir("red fox", "seed_3")
    assert d == tmp_path / "red_fox" / "seed_3"
    assert not d.exists()


def test_is_done_only_for_a_complete_metrics_file(tmp_path: Path):
    w = Writer(tmp_path)
    d = w.item_dir("item")
    assert not w.is_done(d)  # missing directory
    d.mkdir()
    assert not w.is_done(d)  # missing file
    for broken in ("", '{"loss": 0.1', "[1, 2]", "\x00\x01"):
        (d / "metrics.json").write_text(broken)
        assert not w.is_done(d), broken
    (d / "metrics.json").unlink()
    w.save_metrics(d, {"loss": float("nan"), "p": 0.9})
    assert w.is_done(d)
    assert json.loads((d / "metrics.json").read_text()) == {"loss": None, "p": 0.9}


def test_save_image_adds_png_suffix(tmp_path: Path):
    w = Writer(tmp_path)
    path = w.save_image(w.item_dir("a"), "final", torch.full((1, 3, 8, 4), 0.5))
    assert path == tmp_path / "a" / "final.png"
    with Image.open(path) as im:
        assert im.size == (4, 8) and im.getpixel((0, 0)) == (128, 128, 128)
    assert w.save_image(w.item_dir("a"), "x.png", torch.zeros(3, 2, 2)).name == "x.png"


def _solid(color, h, w=None):
    return torch.tensor(color, dtype=torch.float32).view(3, 1, 1).expand(3, h, w or h).clone()


def test_strip_width_is_sum_of_tiles_and_tiny_images_are_upscaled(tmp_path: Path):
    w = Writer(tmp_path)
    images = [_solid((1, 0, 0), 64), _solid((0, 1, 0), 64), _solid((0, 0, 1), 64)]
    path = w.save_strip(tmp_path, "strip", images, ["", "", ""])
    with Image.open(path) as im:
        strip = np.asarray(im.convert("RGB"))
    tile = 128 + 2 * PAD  # 64 px upscaled 2x, nearest
    assert strip.shape[1] == 3 * tile
    assert strip.shape[0] == 128 + 2 * PAD
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        x0 = i * tile + PAD
        assert (strip[PAD : PAD + 128, x0 : x0 + 128] == color).all()  # the whole 128x128 block, crisp
    assert (strip[0, 0] == 255).all()  # white background


def test_strip_sizes_tiles_independently(tmp_path: Path):
    strip = render_strip([_solid((1, 1, 1), 64), _solid((0, 0, 0), 512, 384), _solid((0, 0, 0), 200, 300)],
                         ["a", "b", "c"])
    # 64 -> 128 (x2 nearest), 512x384 -> 256x192, 200x300 unchanged
    assert strip.width == (128 + 2 * PAD) + (192 + 2 * PAD) + (300 + 2 * PAD)
    assert strip.height > MAX_TILE_HEIGHT + 2 * PAD  # room for the captions


def test_strip_captions_are_drawn_and_widen_tiles_when_long():
    img = [_solid((1, 1, 1), 128)]
    plain = render_strip(img, [""])
    captioned = render_strip(img, ["it 3\np_f 0.82 / p_g 0.01"])
    assert captioned.height > plain.height
    caption_area = np.asarray(captioned)[plain.height - PAD :]
    assert (caption_area < 128).any()  # dark text pixels under the image
    wide = render_strip(img, ["a caption much longer than one hundred and twenty-eight pixels"])
    assert wide.width > 128 + 2 * PAD


def test_strip_title_adds_a_header_row():
    img = [_solid((0, 0, 0), 128)]
    assert render_strip(img, ["x"], title="red fox").height > render_strip(img, ["x"]).height


def test_strip_accepts_pil_and_rejects_mismatched_captions():
    assert render_strip([Image.new("RGB", (130, 130))], ["x"]).width == 130 + 2 * PAD
    with pytest.raises(ValueError, match="captions"):
        render_strip([_solid((0, 0, 0), 8)], [])
    with pytest.raises(ValueError):
        render_strip([], [])


def test_summary_round_trip_with_union_of_keys(tmp_path: Path):
    w = Writer(tmp_path)
    assert w.read_summary() == []
    rows = [{"item": "red fox", "seed": 0, "p": 0.5}, {"item": "tench, fish", "loss": float("nan")}, {"seed": 2}]
    path = w.write_summary(rows)
    assert path == tmp_path / "summary.csv"
    assert path.read_text().splitlines()[0] == "item,seed,p,loss"
    assert w.read_summary() == [
        {"item": "red fox", "seed": "0", "p": "0.5", "loss": ""},
        {"item": "tench, fish", "seed": "", "p": "", "loss": "nan"},
        {"item": "", "seed": "2", "p": "", "loss": ""},
    ]
    w.write_summary([{"only": 1}], name="other.csv")
    assert w.read_summary("other.csv") == [{"only": "1"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.csv", "summary.csv"]


def test_grid_stacks_strips_of_different_lengths(tmp_path: Path):
    from digin_cli.io.writer import render_grid

    red, blue = torch.zeros(3, 64, 64), torch.zeros(3, 64, 64)
    red[0], blue[2] = 1, 1
    rows = [([red, red, red], ["a", "b", "c"]), ([blue], ["real"])]
    strips = [render_strip(*rows[0], "generated"), render_strip(*rows[1], "top real")]
    grid = render_grid(rows, ["generated", "top real"])
    assert grid.size == (max(s.width for s in strips), sum(s.height for s in strips))
    # Each row is exactly its strip, pasted at the left edge one under the other.
    assert np.array_equal(np.asarray(grid.crop((0, 0, *strips[0].size))), np.asarray(strips[0]))
    below = grid.crop((0, strips[0].height, strips[1].width, grid.height))
    assert np.array_equal(np.asarray(below), np.asarray(strips[1]))
    titled = render_grid(rows, title="neuron 870")
    assert titled.height > sum(render_strip(*r).height for r in rows)
    path = Writer(tmp_path).save_grid(tmp_path / "item", "grid", rows, ["generated", "top real"])
    assert path.name == "grid.png" and Image.open(path).size == grid.size
    with pytest.raises(ValueError):
        render_grid(rows, ["only one title"])
