"""The real-image methods from Python (issue 18): Counterfactuals, NeuronCounterfactuals and NPCA on tiny models.

Each verb returns a result that wrote nothing; the optimisation moves what its method says it moves (the target
probability, the neuron, the NPCA component: all equal to iterate 0 with lr 0, so these assertions fail then); the
result's mask is the segmenter's; ``save`` writes the files of a CLI item folder. One vce item run through the API and
through ``digin`` with the same seed gives the same image bytes and metrics.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageDraw

from digin_cli.augment import Cutouts
from digin_cli.device import item_seed
from digin_cli.errors import DiginError
from digin_cli.features import npca
import digin_cli as digin
from digin_cli.api.real_images import as_input
from digin_cli.optimize import OptimSettings
from tests.cli_helpers import run_digin

VCE_FILES = {"original.png", "reconstruction.png", "mask_overlay.png", "mask.png", "attention.png", "init.png",
             "counterfactual.png", "iterates.png", "metrics.json"}
FAST = dict(inner_steps=2)  # a shorter null-text inversion: the API tests measure the edit, not the inversion


def fox(size=(96, 80)) -> Image.Image:
    image = Image.new("RGB", size, (40, 120, 200))
    ImageDraw.Draw(image).ellipse((30, 20, 70, 60), fill=(220, 90, 30))
    return image


@pytest.fixture(scope="module")
def clf():
    return digin.load_classifier("tiny_a")


@pytest.fixture(scope="module")
def segmenter():
    return digin.load_segmenter("tiny_sam")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "fox.png"
    fox().save(path)
    return path


def test_an_image_is_read_alike_from_a_path_a_pil_image_and_a_tensor(image_file):
    from_path = as_input(image_file, 64)
    assert from_path.image.shape == (1, 3, 64, 64) and from_path.name == "fox"
    assert torch.equal(as_input(fox(), 64).image, from_path.image)
    assert torch.equal(as_input(from_path.image[0], 64).image, from_path.image)  # the generator's size: as given
    for bad in (from_path.image * 2, torch.rand(2, 3, 64, 64), "no/such/file.png", 3):
        with pytest.raises(DiginError, match=" — "):
            as_input(bad, 64)


def test_counterfactual_raises_the_target_keeps_the_segmenters_mask_and_writes_only_on_save(
        tiny_sd, clf, segmenter, image_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cf = digin.Counterfactuals(tiny_sd, clf, segmenter, edit=digin.CounterfactualSettings(**FAST),
                               settings=OptimSettings(steps=4, lr=0.05), cutouts=Cutouts(num=4))
    result = cf.explain(fox(), target="goldfish")
    assert not any(tmp_path.iterdir()), "the method wrote files before save()"
    its = result.iterates
    assert result.summary["p_target_after"] == pytest.approx(its[result.optimisation.best_index].metrics["p_target"],
                                                             rel=1e-3)
    # The optimisation raises p(goldfish) over iterate 0 (the prompt-to-prompt edit); with lr 0 they are equal.
    assert result.summary["p_target_after"] > 1.05 * its[0].metrics["p_target"], [i.metrics for i in its]
    assert torch.equal(result.image, its[result.optimisation.best_index].image)
    # The mask is the segmenter's on the original and the object's attention map.
    px_mask, _ = segmenter.segment(result.original, result.attention)
    assert torch.equal(result.mask, px_mask.cpu()) and 0 < result.mask.mean() < 1
    assert result.summary["mask"] == "tiny_sam" and result.metrics["target"] == "goldfish"
    folder = result.save(tmp_path / "fox")
    assert {p.name for p in folder.iterdir()} == VCE_FILES
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["summary"] == result.summary and saved["target"] == "goldfish"
    assert [it["p_target"] for it in saved["iterates"]] == [i.metrics["p_target"] for i in its]
    assert result.pil().size == (64, 64)


def test_counterfactual_refuses_its_start_class_in_one_line(tiny_sd, clf, segmenter):
    cf = digin.Counterfactuals(tiny_sd, clf, segmenter, settings=OptimSettings(steps=0))
    start = int(clf(as_input(fox(), 64).image).argmax())
    with pytest.raises(DiginError, match="equals the start class"):
        cf.explain(fox(), target=start)


def test_neuron_counterfactual_moves_the_neuron_both_ways(tiny_sd, clf, segmenter):
    # Without the distance term the loss is -/+phi alone (as tests/tasks/test_neuron_cf.py).
    edit = digin.FeatureEditSettings(w_vae=0, w_px=0, **FAST)
    ncf = digin.NeuronCounterfactuals(tiny_sd, clf, segmenter, settings=OptimSettings(steps=3, lr=0.05), edit=edit)
    for direction, sign in (("max", 1), ("min", -1)):
        result = ncf.explain(fox(), neuron=5, direction=direction)
        start = result.iterates[0].metrics["phi"]
        assert sign * (result.summary["phi_after"] - start) >= 0.01, (direction, result.summary, start)
        assert result.metrics["direction"] == direction and result.metrics["neuron"] == 5
        assert result.metrics["schedule"]["inject_until"] == 0.3  # the authors' single neuron-cf schedule
    with pytest.raises(DiginError, match="out of range"):
        ncf.explain(fox(), neuron=clf.num_features)


def test_npca_maximise_raises_the_component_and_saves_its_strip(tiny_sd, clf, segmenter, tmp_path):
    torch.manual_seed(1)
    k = 1  # goldfish
    images = torch.rand(12, 3, 32, 32) * 0.5 + torch.linspace(0, 0.5, 12).view(-1, 1, 1, 1)
    with torch.no_grad():
        feats = clf.features(images)
    comps = npca(feats, clf.head()[0][k])
    edit = digin.FeatureEditSettings(w_vae=0, w_px=0, **FAST)
    method = digin.NPCA(tiny_sd, clf, segmenter, components=comps, class_="goldfish",
                        settings=OptimSettings(steps=3, lr=0.05), edit=edit)
    result = method.maximise(fox(), component=1)
    assert result.summary["alpha_after"] > result.iterates[0].metrics["phi"], result.summary
    folder = result.save(tmp_path / "boat")
    assert (folder / "npca.png").is_file() and (folder / "counterfactual.png").is_file()
    assert json.loads((folder / "metrics.json").read_text())["component"] == 1
    with pytest.raises(DiginError, match="component 99 is out of range"):
        method.maximise(fox(), component=99)


@pytest.mark.slow
def test_one_vce_item_through_the_api_equals_the_cli(tiny_sd, clf, segmenter, image_file, tmp_path):
    steps, lr, views = 3, 0.05, 4
    args = ["task=vce", "generator=tiny", "classifier=tiny_a", "segmentation=tiny_sam", "device=cpu",
            "captioner=none", "generator.num_steps=4", f"optimizer.augment.num={views}", f"optimizer.steps={steps}",
            f"optimizer.lr={lr}", f"task.images={image_file}", "task.targets=[goldfish]", "seed=0",
            f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = run_digin(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (metrics_file,) = (tmp_path / "out").glob("vce/runs/*/fox/*/metrics.json")
    item = metrics_file.parent
    job = item.parent.parent
    seed = item_seed(0, item.relative_to(job).as_posix())  # what run_items seeds the item with

    cf = digin.Counterfactuals(tiny_sd, clf, segmenter, settings=OptimSettings(steps=steps, lr=lr, checkpointing=True),
                               cutouts=Cutouts(num=views))
    result = cf.explain(image_file, target="goldfish", seed=seed)
    folder = result.save(tmp_path / "api")
    assert {p.name for p in folder.iterdir()} == {p.name for p in item.iterdir()} == VCE_FILES
    for name in VCE_FILES - {"metrics.json"}:
        assert (folder / name).read_bytes() == (item / name).read_bytes(), name
    cli, api = json.loads(metrics_file.read_text()), json.loads((folder / "metrics.json").read_text())
    timing = {"seconds", "peak_memory_mb", "config_hash"}
    assert {k: v for k, v in api.items() if k not in timing} == {k: v for k, v in cli.items() if k not in timing}
    assert api["summary"]["p_target_after"] > api["iterates"][0]["p_target"]


@pytest.mark.parametrize("task", ["vce", "neuron_cf", "npca"])
def test_default_settings_are_the_config_groups(tiny_sd, clf, segmenter, task):
    """The edit defaults are what conf/task/<task>.yaml holds, the optimizer's are conf/optimizer/adam.yaml."""
    from dataclasses import asdict

    from digin_cli.api.builders import preset as digin_preset

    cls = digin.Counterfactuals if task == "vce" else digin.NeuronCounterfactuals
    yaml = digin_preset("task", task)  # as the CLI composes it: the real-image block comes from a fragment
    assert cls.edit_type() == cls.edit_type.from_task(yaml)
    method = cls(tiny_sd, clf, segmenter)
    adam, augment = digin.optimizer_settings("adam")
    assert asdict(method.settings) | {"optimizer": None} == asdict(adam) | {"optimizer": None}
    views = augment.num if task == "vce" else 0  # neuron_cf / npca: task.cutouts=0, as the authors
    assert (method.cutouts.num, method.cutouts.power, method.cutouts.noise_sd) == (views, augment.power,
                                                                                   augment.noise_sd)
