"""Stable Diffusion's safety checker (diffusers' StableDiffusionSafetyChecker, a tiny random one built from a config
whose concept is a planted image): verdicts, records, loading, the one-line offline error, report.html's blur, and
``safety=true`` in a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digin_cli.errors import DiginError
from digin_cli.io.report import render_run
from digin_cli.safety import SafetyChecker, check_files, check_folder
from tests.cli_helpers import one_line_error, run_digin
from tests.report_checks import Page
from tests.study.helpers import picture, planted, tiny_checker, vce_run


@pytest.fixture(scope="module")
def checker():
    return tiny_checker(planted(), [picture(i) for i in range(60)] + [picture(i * 7 + 3) for i in range(60)])


def test_the_checker_flags_the_planted_image_only(checker, tmp_path):
    files = []
    for n, image in enumerate([picture(500), planted(), picture(501), picture(502)]):
        image.save(tmp_path / f"{n}.png")
        files.append(tmp_path / f"{n}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")  # cannot be checked, so cannot be called safe
    verdicts = check_files(checker, [*files, tmp_path / "broken.png"])
    assert [verdicts[p] for p in files] == [False, True, False, False] and verdicts[tmp_path / "broken.png"]
    # The verdict is the checker's own: with its concept threshold above 1 nothing can be flagged.
    saved = checker.model.concept_embeds_weights[0].item()
    checker.model.concept_embeds_weights.data[0] = 1.5
    try:
        assert not any(check_files(checker, files).values())
    finally:
        checker.model.concept_embeds_weights.data[0] = saved


def test_a_saved_checker_loads_and_agrees_and_a_missing_one_is_one_line(checker, tmp_path):
    folder = tmp_path / "checker"
    checker.model.save_pretrained(folder)
    checker.processor.save_pretrained(folder)
    loaded = SafetyChecker.load(str(folder))
    images = [picture(7), planted(), picture(8)]
    assert loaded(images) == checker(images) == [False, True, False]
    with pytest.raises(DiginError) as err:
        SafetyChecker.load("CompVis/stable-diffusion-safety-checker")  # HF_HUB_OFFLINE=1, nothing cached
    assert "'CompVis/stable-diffusion-safety-checker'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DiginError, match="from folder"):
        SafetyChecker.load(str(tmp_path))


def test_report_blurs_exactly_the_flagged_images(checker, tmp_path):
    run = vce_run(tmp_path, "run", unsafe=("dog.png", "tiger cat"))
    for folder in [p.parent for p in run.rglob("metrics.json")]:
        check_folder(checker, folder, checker.name)
    record = json.loads((run / "dog.png" / "1_tiger_cat" / "safety.json").read_text())
    assert record["flagged"] == ["counterfactual.png"] and set(record["images"]) == {
        "counterfactual.png", "mask_overlay.png", "original.png"}
    (run / "report.html").write_text(render_run(run, ["original.png", "counterfactual.png"]))
    page = Page(run / "report.html")
    blurred = [a["src"] for tag, a in page.tags if tag == "img" and "unsafe" in a.get("class", "").split()]
    assert blurred == ["dog.png/1_tiger_cat/counterfactual.png"]
    assert sum(tag == "img" for tag, _ in page.tags) == 12


@pytest.mark.slow
def test_safety_true_in_a_run_records_every_item_and_blurs(checker, tmp_path):
    folder = tmp_path / "everything"  # a checker that flags every image: cosine - (-1) > 0
    checker.model.save_pretrained(folder)
    checker.processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["concept_embeds_weights"][0] = -1.0
    save_file(weights, folder / "model.safetensors")
    assert config  # a real saved config travelled with it
    env = {"PYTHONPATH": str(Path.cwd())}
    args = ["experiment=demo", "optimizer.steps=1", "optimizer.augment.num=2", "generator.num_steps=2",
            "task.classes=[goldfish]", "task.seeds=[0]", f"paths.output_root={tmp_path}"]
    proc = run_digin(*args, "safety=true", f"safety_checker={folder}", env=env)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "disagreement" / "runs").iterdir()
    (item,) = [p.parent for p in run.rglob("metrics.json")]
    record = json.loads((item / "safety.json").read_text())
    assert record["flagged"] == ["best.png", "init.png", "iterates.png"] and record["checker"] == str(folder)
    page = Page(run / "report.html")
    assert all("unsafe" in a.get("class", "") for tag, a in page.tags if tag == "img")

    proc = run_digin(*args, "safety=true", "hydra.run.dir=" + str(tmp_path / "offline"), env=env)
    assert proc.returncode == 2 and "stable-diffusion-safety-checker" in one_line_error(proc)
    assert not list((tmp_path / "offline").rglob("metrics.json"))  # refused before any item ran
