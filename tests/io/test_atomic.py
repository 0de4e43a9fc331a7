"""Atomic writes: complete files or nothing, strict JSON, exact image round trips."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digin_cli.io import atomic
from digin_cli.io.atomic import (
    atomic_save_image,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    tensor_to_pil,
)


def _strict_loads(text: str):
    def reject(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_write_bytes_creates_parents_and_leaves_only_the_target(tmp_path: Path):
    path = tmp_path / "a" / "b" / "data.bin"
    assert atomic_write_bytes(path, b"\x00\x01payload") == path
    assert path.read_bytes() == b"\x00\x01payload"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]


def test_write_text_replaces_existing_content(tmp_path: Path):
    path = tmp_path / "note.txt"
    atomic_write_text(path, "first, longer content")
    atomic_write_text(path, "second ✓")
    assert path.read_text("utf-8") == "second ✓"


def test_written_file_gets_umask_mode_not_tempfile_0600(tmp_path: Path):
    path = atomic_write_text(tmp_path / "x.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK


def test_json_is_strict_with_nan_and_inf_as_null_and_key_order_kept(tmp_path: Path):
    obj = {"z": 1, "nan": math.nan, "nested": {"inf": math.inf, "list": [1.5, -math.inf, (math.nan, 2)]},
           "tensor": torch.tensor(0.25), "tensor_nan": torch.tensor(float("nan")), "a": None}
    path = atomic_write_json(tmp_path / "m.json", obj)
    text = path.read_text()
    loaded = _strict_loads(text)
    assert loaded == {"z": 1, "nan": None, "nested": {"inf": None, "list": [1.5, None, [None, 2]]},
                      "tensor": 0.25, "tensor_nan": None, "a": None}
    assert list(loaded) == ["z", "nan", "nested", "tensor", "tensor_nan", "a"]
    assert '\n  "z": 1' in text  # indent 2


def test_unserialisable_json_leaves_no_file_and_keeps_old_content(tmp_path: Path):
    path = tmp_path / "m.json"
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert list(tmp_path.iterdir()) == []

    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": {1, 2}})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("existing", [False, True])
def test_failing_replace_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool):
    path = tmp_path / "out.bin"
    if existing:
        path.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(path, b"new")
    assert [p.name for p in tmp_path.iterdir()] == (["out.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"


def test_failing_image_encode_leaves_nothing(tmp_path: Path):
    with pytest.raises(ValueError):
        atomic_save_image(tmp_path / "x.png", torch.zeros(2, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_half_grey_maps_to_128_everywhere():
    pil = tensor_to_pil(torch.full((3, 5, 7), 0.5))
    assert pil.mode == "RGB" and pil.size == (7, 5)
    assert (np.asarray(pil) == 128).all()


def test_uint8_values_round_trip_exactly_through_png(tmp_path: Path):
    values = torch.arange(256, dtype=torch.uint8)
    # Each channel a different permutation of 0..255, laid out 16x16 so a transposition would also show.
    rgb = torch.stack([values, values.flip(0), values.roll(7)]).reshape(3, 16, 16)
    path = atomic_save_image(tmp_path / "img.png", (rgb.float() / 255).unsqueeze(0))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (16, 16)
        back = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    assert torch.equal(back, rgb)


def test_non_square_tensor_keeps_orientation(tmp_path: Path):
    x = torch.zeros(3, 2, 6)  # H=2, W=6
    x[0, 1, 5] = 1.0  # bottom-right pixel red
    with Image.open(atomic_save_image(tmp_path / "o.png", x)) as im:
        assert im.size == (6, 2)
        assert im.getpixel((5, 1)) == (255, 0, 0) and im.getpixel((0, 0)) == (0, 0, 0)


def test_out_of_range_and_nan_are_clamped():
    x = torch.tensor([-1.0, 2.0, float("nan")]).reshape(3, 1, 1)
    assert tensor_to_pil(x).getpixel((0, 0)) == (0, 255, 0)


def test_grad_tensor_and_pil_input(tmp_path: Path):
    x = torch.rand(3, 4, 4, requires_grad=True)
    assert tensor_to_pil(x).size == (4, 4)
    pil = Image.new("RGB", (3, 2), (10, 20, 30))
    assert tensor_to_pil(pil) is pil
    with Image.open(atomic_save_image(tmp_path / "p.png", pil)) as im:
        assert im.size == (3, 2) and im.getpixel((2, 1)) == (10, 20, 30)


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 4, 4), (4, 4, 3), (5, 4, 4)])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(ValueError, match="expected an image"):
        tensor_to_pil(torch.zeros(shape))
