"""Files streamed for feature statistics are decode-checked before any item too (issue 17): neuron's reference images
and npca's component images, all unreadable ones in one line."""

from __future__ import annotations

import pytest


@pytest.fixture
def mixed(data, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("crab.png", "chicken.png"):
        (folder / name).write_bytes((data / "images" / name).read_bytes())
    (folder / "broken.png").write_bytes((data / "images" / "crab.png").read_bytes()[:200])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("ignored")
    return folder


@pytest.mark.parametrize("task,args,key", [
    ("neuron", ["task.neurons=[3]"], "task.reference_images"),
    ("npca", ["segmentation=tiny_sam", "task.component_class=goldfish"], "task.component_images"),
])
def test_unreadable_statistics_images_are_one_line_before_any_item(data, digin_here, expect_error, mixed, tmp_path,
                                                                   task, args, key):
    extra = [f"task.images={data / 'images' / 'chicken.png'}"] if task == "npca" else []
    proc = digin_here(f"task={task}", *args, *extra, f"{key}={mixed}", output=tmp_path / "out")
    expect_error(proc, "cannot read 2 images", "broken.png", "empty.jpg (empty file)", key)
    assert "readme.txt" not in proc.stderr
    assert not list((tmp_path / "out").rglob("metrics.json"))
