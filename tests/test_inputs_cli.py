"""Real-image folders through the CLI (issue 17): unreadable files reported together before any work, or skipped and
listed; the centre crop fraction recorded with the results."""

import csv
import io
import json

import pytest
from PIL import Image, ImageDraw

from tests.cli_helpers import one_line_error, run_digin

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2 good images, a truncated JPEG, an empty .jpg and a text file (ignored by its extension)."""
    root = tmp_path_factory.mktemp("inputs") / "images"
    root.mkdir()
    for name, colour in (("fox.png", (220, 90, 30)), ("owl.png", (30, 200, 90))):
        image = Image.new("RGB", (96, 80), (40, 120, 200))
        ImageDraw.Draw(image).ellipse((30, 20, 70, 60), fill=colour)
        image.save(root / name)
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    (root / "broken.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("a text file")
    return root


def digin(work, *args, wandb=False):
    base = ["task=vce", "captioner=none", "generator=tiny", "classifier=tiny_a", "segmentation=tiny_sam", "device=cpu",
            f"paths.output_root={work / 'out'}", f"paths.cache_dir={work / 'cache'}", "generator.num_steps=3",
            "optimizer.augment.num=2", "optimizer.steps=1", "task.targets=[goldfish]", "task.p2p.injections=[0.3]",
            "task.p2p.blends=[0.0]", *(["logger=offline"] if wandb else [])]
    return run_digin(*base, *args, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})


def test_unreadable_images_are_named_together_before_any_item_or_wandb_run(folder, tmp_path):
    proc = digin(tmp_path, f"task.images={folder}", wandb=True)
    error = one_line_error(proc, "cannot read 2 images", "broken.jpg", "empty.jpg", "task.skip_unreadable=true")
    assert "notes.txt" not in error
    (run,) = (tmp_path / "out").glob("vce/runs/*")
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert not [p for p in run.iterdir() if p.is_dir() and not p.name.startswith(".")], "no item folder"
    assert not (run / "wandb").exists()


def test_skip_unreadable_runs_the_good_images_and_lists_the_bad_ones(folder, tmp_path):
    proc = digin(tmp_path, f"task.images={folder}", "task.skip_unreadable=true", "task.crop_fraction=1.0")
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "out").glob("vce/runs/*")
    with open(run / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["image"], r["status"]) for r in rows) == [("broken.jpg", "skipped"), ("empty.jpg", "skipped"),
                                                               ("fox", "ok"), ("owl", "ok")]
    assert "empty file" in next(r["error"] for r in rows if r["image"] == "empty.jpg")
    for name in ("fox", "owl"):
        (metrics,) = (run / name).glob("*/metrics.json")
        assert json.loads(metrics.read_text())["crop_fraction"] == 1.0
    status = json.loads((run / "status.json").read_text())
    assert status["items"] == 2 and status["inputs_skipped"] == 2
    page = (run / "report.html").read_text()
    assert "broken.jpg" in page and "empty.jpg" in page and 'class="status skipped"' in page


@pytest.mark.parametrize("override,needle", [
    ("task.crop_fraction=0", "task.crop_fraction must be a number in (0, 1]"),
    ("task.crop_fraction=1.5", "1.5"),
    ("task.skip_unreadable=maybe", "task.skip_unreadable must be true or false"),
])
def test_bad_input_options_are_one_line_in_the_preflight(tmp_path, override, needle, folder):
    proc = digin(tmp_path, f"task.images={folder}", override)
    one_line_error(proc, needle)
    assert proc.returncode == 2
    assert not (tmp_path / "out").exists()
