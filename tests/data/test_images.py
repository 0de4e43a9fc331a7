"""Real-image inputs: preprocessing numbers, file / folder / ImageNet-layout listings, and every user error."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digin_cli.data import images as images_mod
from digin_cli.data import load_inputs, preprocess, short_side
from digin_cli.errors import DiginError

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def half_red_blue(w: int = 200, h: int = 100) -> Image.Image:
    im = Image.new("RGB", (w, h), BLUE)
    im.paste(RED, (0, 0, w // 2, h))
    return im


def save(path: Path, color=(10, 20, 30), size=(40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def assert_user_error(excinfo, *fragments: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and " — " in msg, msg  # one line, '<what is wrong> — <the fix>'
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --- preprocess ------------------------------------------------------------------------------------------------


def test_short_side_scales_640_over_512():
    assert short_side(512) == 640 and short_side(64) == 80 and short_side(256) == 320


def test_preprocess_resizes_short_side_then_centre_crops():
    pil = half_red_blue(200, 100)
    x = preprocess(pil, 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # 200x100 -> 160x80 (short side 64*640/512 = 80), crop at left = (160-64)/2 = 48, top = (80-64)/2 = 8: the
    # red/blue edge (x = 80 after resizing) lands at column 32 of the crop.
    reference = pil.resize((160, 80), Image.Resampling.BICUBIC).crop((48, 8, 48 + 64, 8 + 64))
    expected = torch.from_numpy(np.array(reference)).permute(2, 0, 1).float() / 255
    assert torch.equal(x[0], expected)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    blue = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    assert torch.allclose(x[0, :, :, :29], red.expand(3, 64, 29), atol=1 / 255)
    assert torch.allclose(x[0, :, :, 36:], blue.expand(3, 64, 28), atol=1 / 255)
    # the edge itself sits between columns 31 and 32
    assert x[0, 0, 32, 31] > 0.5 > x[0, 0, 32, 32]


@pytest.mark.parametrize("size,resolution", [((201, 100), 64), ((100, 301), 64), ((333, 250), 48), ((64, 64), 64)])
def test_preprocess_matches_documented_arithmetic(size, resolution):
    # long side truncated (201x100 -> 160x80, not 161x80), offsets int(round((len - R) / 2)), PIL bicubic
    pil = Image.effect_noise(size, 60).convert("RGB")
    w, h = size
    s = round(resolution * 640 / 512)
    new_w, new_h = (int(s * w / h), s) if h <= w else (s, int(s * h / w))
    left, top = int(round((new_w - resolution) / 2)), int(round((new_h - resolution) / 2))
    reference = pil.resize((new_w, new_h), Image.Resampling.BICUBIC).crop(
        (left, top, left + resolution, top + resolution))
    expected = torch.from_numpy(np.array(reference)).permute(2, 0, 1).float() / 255
    assert torch.equal(preprocess(pil, resolution)[0], expected)


def test_preprocess_crops_tall_images_vertically_at_the_centre():
    # 100x300 -> 80x240, top = (240-64)/2 = 88, i.e. original rows 110..190: a green band over rows 120..180 is
    # in the middle of the crop, the red top (rows < 100) and the blue bottom (rows >= 200) are cut away.
    im = Image.new("RGB", (100, 300), GREEN)
    im.paste(RED, (0, 0, 100, 100))
    im.paste(BLUE, (0, 200, 100, 300))
    x = preprocess(im, 64)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x[0, :, 10:54], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 44, 64), atol=1 / 255)


def test_preprocess_makes_three_channels_from_gray_rgba_and_palette():
    gray = preprocess(Image.new("L", (50, 50), 128), 32)
    assert gray.shape == (1, 3, 32, 32)
    assert torch.allclose(gray, torch.full_like(gray, 128 / 255))

    rgba = Image.new("RGBA", (50, 50), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (25, 0, 50, 50))  # right half fully transparent (stored colour black)
    x = preprocess(rgba, 32)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, :, :, 0], torch.tensor([1.0, 0.0, 0.0]).view(3, 1).expand(3, 32))
    assert torch.allclose(x[0, :, :, -1], torch.ones(3, 32))  # transparency reads as white, not as stored black

    palette = Image.new("RGB", (50, 50), BLUE).convert("P")
    assert palette.mode == "P"
    p = preprocess(palette, 32)
    assert p.shape == (1, 3, 32, 32) and torch.allclose(p[0, 2], torch.ones(32, 32))


# --- sources ---------------------------------------------------------------------------------------------------


def test_single_file(tmp_path):
    path = tmp_path / "My Photo.png"
    half_red_blue().save(path)
    (item,) = load_inputs(str(path), 64)
    assert item.image.shape == (1, 3, 64, 64)
    assert item.name == "my_photo" and item.path == path and item.label is None and item.index is None
    assert torch.equal(item.image, preprocess(half_red_blue(), 64))


def test_folder_sorted_ignoring_hidden_and_other_files(tmp_path):
    save(tmp_path / "b.jpg", (0, 255, 0), fmt="JPEG")
    save(tmp_path / "a.png", (255, 0, 0))
    save(tmp_path / "C.PNG", (0, 0, 255), fmt="PNG")  # extensions match case-insensitively
    save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / "sub" / "nested.png")  # non-recursive
    items = load_inputs(tmp_path, 32)
    assert [i.path.name for i in items] == ["C.PNG", "a.png", "b.jpg"]
    assert [i.name for i in items] == ["c", "a", "b"]
    assert all(i.label is None and i.image.shape == (1, 3, 32, 32) for i in items)
    assert items[1].image[0, 0].mean() > 0.99 and items[0].image[0, 2].mean() > 0.99


def test_folder_names_stay_unique(tmp_path):
    save(tmp_path / "a.png", (1, 1, 1))
    save(tmp_path / "a.jpg", (2, 2, 2), fmt="JPEG")
    assert [i.name for i in load_inputs(str(tmp_path), 16)] == ["a", "a_2"]


def imagenet_tree(root: Path) -> Path:
    """3 class folders x 2 images, each image a different flat grey so they can be told apart."""
    wnids = ["n01440764", "n01443537", "n01484850"]
    shade = 0
    for wnid in reversed(wnids):  # creation order must not matter
        for k in (2, 1):
            shade += 30
            save(root / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", (shade, shade, shade), fmt="JPEG")
    (root / wnids[0] / "readme.txt").write_text("ignored")
    (root / "LOC_val_solution.csv").write_text("not a class folder")
    return root


def test_imagenet_layout_labels_and_indices(tmp_path):
    root = imagenet_tree(tmp_path / "val")
    items = load_inputs(None, 32, imagenet_val=str(root), indices=[0, 3, 5])
    assert [i.index for i in items] == [0, 3, 5]
    assert [i.label for i in items] == [0, 1, 2]
    assert [i.name for i in items] == ["val_00000", "val_00003", "val_00005"]
    assert [(i.path.parent.name, i.path.name) for i in items] == [
        ("n01440764", "ILSVRC2012_val_00000001.JPEG"),
        ("n01443537", "ILSVRC2012_val_00000002.JPEG"),
        ("n01484850", "ILSVRC2012_val_00000002.JPEG"),
    ]
    same = load_inputs("imagenet_val", 32, imagenet_val=root, indices=[3], class_names=["x", "y", "z"])
    assert same[0].path == items[1].path and torch.equal(same[0].image, items[1].image)


def test_imagenet_listing_is_built_once(tmp_path, monkeypatch):
    root = imagenet_tree(tmp_path / "val")
    load_inputs(None, 16, imagenet_val=root, indices=[0])
    calls = []
    real = images_mod.os.scandir
    monkeypatch.setattr(images_mod.os, "scandir", lambda p: calls.append(p) or real(p))
    items = load_inputs(None, 16, imagenet_val=root, indices=[1, 4])
    assert calls == [] and [i.label for i in items] == [0, 2]


def test_imagenet_all_indices_warns(tmp_path, caplog):
    root = imagenet_tree(tmp_path / "val")
    with caplog.at_level(logging.WARNING, logger="digin_cli.data.images"):
        items = load_inputs(None, 16, imagenet_val=root)
    assert [i.index for i in items] == list(range(6)) and [i.label for i in items] == [0, 0, 1, 1, 2, 2]
    assert "all 6 images" in caplog.text and "task.indices" in caplog.text


def test_content_hash_stable_and_distinct(tmp_path):
    save(tmp_path / "x.png", (10, 20, 30))
    save(tmp_path / "y.png", (10, 20, 31))
    (a,) = load_inputs(tmp_path / "x.png", 32)
    (again,) = load_inputs(str(tmp_path / "x.png"), 32)
    (b,) = load_inputs(tmp_path / "y.png", 32)
    assert len(a.content_hash) == 16 and int(a.content_hash, 16) >= 0
    assert a.content_hash == again.content_hash != b.content_hash
    assert a.content_hash != load_inputs(tmp_path / "x.png", 16)[0].content_hash


# --- errors: one line, naming the fix --------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DiginError) as e:
        load_inputs(str(tmp_path / "nope.png"), 32)
    assert_user_error(e, "image not found", "nope.png", "task.images=")


def test_corrupt_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x00garbage, not a png\nsecond line")
    with pytest.raises(DiginError) as e:
        load_inputs(tmp_path / "x.png", 32)
    assert_user_error(e, "cannot read image", "x.png", "task.images")


def test_truncated_file_in_folder_fails_before_returning(tmp_path):
    save(tmp_path / "a.png")
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    (tmp_path / "b.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DiginError) as e:
        load_inputs(tmp_path, 32)
    assert_user_error(e, "cannot read image", "b.jpg", "remove or replace")


def test_non_image_extension(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DiginError) as e:
        load_inputs(tmp_path / "notes.txt", 32)
    assert_user_error(e, "not an image file", "notes.txt", ".png", "task.images=")


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    save(tmp_path / ".hidden.png")
    with pytest.raises(DiginError) as e:
        load_inputs(tmp_path, 32)
    assert_user_error(e, "no images in", str(tmp_path), ".png, .jpg, .jpeg, .webp, .bmp", "task.images=")


def test_folder_of_class_folders_hints_at_imagenet_val(tmp_path):
    root = imagenet_tree(tmp_path / "val")
    with pytest.raises(DiginError) as e:
        load_inputs(root, 32)
    assert_user_error(e, "no images in", f"paths.imagenet_val={root}")


def test_index_out_of_range(tmp_path):
    root = imagenet_tree(tmp_path / "val")
    with pytest.raises(DiginError) as e:
        load_inputs(None, 32, imagenet_val=root, indices=[1, 50000])
    assert_user_error(e, f"index 50000 out of range: {root} holds 6 images (0..5)", "task.indices")
    with pytest.raises(DiginError) as e:
        load_inputs(None, 32, imagenet_val=root, indices=[-1])
    assert_user_error(e, "index -1 out of range")


@pytest.mark.parametrize("source", [None, "imagenet_val"])
def test_imagenet_val_unset(source):
    with pytest.raises(DiginError) as e:
        load_inputs(source, 32, imagenet_val=None, indices=[0])
    assert_user_error(e, "set paths.imagenet_val=/path/to/imagenet/val (class subfolders)")


def test_imagenet_val_missing_or_flat(tmp_path):
    with pytest.raises(DiginError) as e:
        load_inputs(None, 32, imagenet_val=tmp_path / "missing", indices=[0])
    assert_user_error(e, "not found", "set paths.imagenet_val=")
    save(tmp_path / "flat" / "ILSVRC2012_val_00000001.JPEG", fmt="JPEG")  # the un-sorted val tarball layout
    with pytest.raises(DiginError) as e:
        load_inputs(None, 32, imagenet_val=tmp_path / "flat", indices=[0])
    assert_user_error(e, "no class subfolders", "set paths.imagenet_val=")


def test_imagenet_class_count_must_match_classifier(tmp_path):
    root = imagenet_tree(tmp_path / "val")
    with pytest.raises(DiginError) as e:
        load_inputs(None, 32, imagenet_val=root, indices=[0], class_names=[f"c{i}" for i in range(1000)])
    assert_user_error(e, "3 class folders", "1000 classes", "set paths.imagenet_val=")


def test_corrupt_imagenet_image_named(tmp_path):
    root = imagenet_tree(tmp_path / "val")
    bad = root / "n01443537" / "ILSVRC2012_val_00000001.JPEG"
    bad.write_bytes(b"garbage")
    assert load_inputs(None, 16, imagenet_val=root, indices=[0, 1])  # not selected: not read
    with pytest.raises(DiginError) as e:
        load_inputs(None, 16, imagenet_val=root, indices=[0, 2])
    assert_user_error(e, "cannot read image", str(bad), "task.indices")


# --- unreadable files, all at once (issue 17) ------------------------------------------------------------------


def _bad_folder(root: Path) -> Path:
    """2 good images, a truncated JPEG, an empty .jpg and a text file."""
    save(root / "a_good.png", RED)
    save(root / "d_good.jpg", BLUE, size=(48, 40))
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    (root / "b_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "c_empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, ignored by extension")
    return root


def test_every_unreadable_file_of_a_folder_is_named_in_one_line(tmp_path):
    folder = _bad_folder(tmp_path)
    with pytest.raises(DiginError) as e:
        load_inputs(folder, 32)
    msg = assert_user_error(e, "cannot read 2 images", "b_truncated.jpg", "c_empty.jpg (empty file)",
                            "task.skip_unreadable=true")
    assert "notes.txt" not in msg and "good" not in msg


def test_skip_unreadable_returns_the_good_images_and_lists_the_bad(tmp_path):
    folder = _bad_folder(tmp_path)
    skipped: list = []
    images = load_inputs(folder, 32, skip_unreadable=True, skipped=skipped)
    assert [i.name for i in images] == ["a_good", "d_good"]
    assert torch.allclose(images[0].image[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert [(p.name, r) for p, r in skipped][1] == ("c_empty.jpg", "empty file")
    assert skipped[0][0].name == "b_truncated.jpg" and "truncated" in skipped[0][1].lower()


def test_many_unreadable_files_name_five_and_the_count(tmp_path):
    for n in range(8):
        (tmp_path / f"bad_{n}.png").write_bytes(b"not a png")
    with pytest.raises(DiginError) as e:
        load_inputs(tmp_path, 32)
    msg = assert_user_error(e, "cannot read 8 images", "bad_4.png", "… and 3 more")
    assert "bad_5.png" not in msg


def test_verify_images_checks_streamed_files_the_same_way(tmp_path):
    folder = _bad_folder(tmp_path)
    files = images_mod.image_files(folder, "task.reference_images")
    with pytest.raises(DiginError) as e:
        images_mod.verify_images(files, "remove or replace those files (task.reference_images)")
    assert_user_error(e, "cannot read 2 images", "b_truncated.jpg", "c_empty.jpg")
    skipped: list = []
    good = images_mod.verify_images(files, "fix", skip=True, skipped=skipped)
    assert [p.name for p in good] == ["a_good.png", "d_good.jpg"] and len(skipped) == 2


# --- centre crop fraction (issue 17) ---------------------------------------------------------------------------


def test_crop_fraction_one_keeps_the_whole_square_image_resized():
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    whole = pil.resize((64, 64), Image.Resampling.BICUBIC)
    expected = torch.from_numpy(np.array(whole)).permute(2, 0, 1).float() / 255
    assert torch.equal(preprocess(pil, 64, crop_fraction=1.0)[0], expected)
    assert not torch.equal(preprocess(pil, 64)[0], expected)  # the authors' 0.8 cuts the border
    assert short_side(64, 1.0) == 64 and short_side(64, 0.8) == short_side(64) == 80 and short_side(64, 0.5) == 128


def test_crop_fraction_one_keeps_the_whole_shorter_side_of_a_wide_image():
    x = preprocess(half_red_blue(200, 100), 64, crop_fraction=1.0)
    # 200x100 -> 128x64, crop left = 32: the red/blue edge (x = 64) lands at column 32, the full height is kept.
    reference = half_red_blue(200, 100).resize((128, 64), Image.Resampling.BICUBIC).crop((32, 0, 96, 64))
    assert torch.equal(x[0], torch.from_numpy(np.array(reference)).permute(2, 0, 1).float() / 255)


def test_load_inputs_and_feature_cache_key_follow_the_crop_fraction(tmp_path):
    from digin_cli.features import FeatureCache

    path = save(tmp_path / "a.png", size=(40, 40))
    Image.effect_noise((40, 40), 80).convert("RGB").save(path)
    a = load_inputs(path, 32)[0]
    b = load_inputs(path, 32, crop_fraction=1.0)[0]
    assert a.content_hash != b.content_hash  # inversion / caption caches key on the prepared pixels
    assert FeatureCache.key("c", [path], 32) != FeatureCache.key("c", [path], 32, 1.0)
    assert FeatureCache.key("c", [path], 32) == FeatureCache.key("c", [path], 32, 0.8)
