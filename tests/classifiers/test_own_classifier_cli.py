"""Bring your own classifier, through the `digin` CLI: a user's nn.Module on PYTHONPATH and a Hugging Face folder, in
disagreement and vce runs on the tiny generator, and every bad input as one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.cli_helpers import one_line_error, run_digin

from .conftest import save_tiny_vit

pytestmark = pytest.mark.slow

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ROOT = Path(__file__).resolve().parents[2]
HF_NAMES = ["cat", "apple_pie", "ship", "dog", "horse"]  # shares cat / ship / dog / horse with CIFAR-10
VCE = ["task=vce", "captioner=none"]  # the ablation: task=vce's BLIP-large captioner is not in an offline cache


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A user's checkpoint of digin_user_nets.nets.small_net, a saved Hugging Face ViT, and one photo."""
    import torch

    root = tmp_path_factory.mktemp("own")
    sys.path.insert(0, str(ASSETS))
    try:
        from digin_user_nets.nets import small_net

        torch.save(small_net(10).state_dict(), root / "cifar_net.pt")
    finally:
        sys.path.remove(str(ASSETS))
    save_tiny_vit(root / "hf_model", names=HF_NAMES)
    image = Image.new("RGB", (96, 80), (40, 120, 200))
    ImageDraw.Draw(image).ellipse((30, 20, 70, 60), fill=(220, 90, 30))
    image.save(root / "photo.png")
    return root


def torch_module(work: Path, key: str = "classifier") -> list[str]:
    return [f"{key}=torch_module", f"{key}.model._target_=digin_user_nets.nets.small_net",
            f"+{key}.model.num_classes=10", f"{key}.checkpoint={work / 'cifar_net.pt'}",
            f"{key}.class_names={ASSETS / 'cifar10_classes.txt'}", f"{key}.input_size=32",
            f"{key}.mean=[0.4914,0.4822,0.4465]", f"{key}.std=[0.2470,0.2435,0.2616]", f"{key}.interpolation=bilinear"]


def hf(work: Path, key: str = "classifier") -> list[str]:
    return [f"{key}=hf", f"{key}.pretrained={work / 'hf_model'}"]


def digin(work: Path, *args: str, output: str = "out") -> subprocess.CompletedProcess:
    base = ["generator=tiny", "segmentation=tiny_sam", "device=cpu", f"paths.output_root={work / output}",
            f"paths.cache_dir={work / 'cache'}", "generator.num_steps=3", "optimizer.augment.num=2",
            "optimizer.steps=2"]
    pythonpath = os.pathsep.join([str(ASSETS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return run_digin(*base, *args, env={"PYTHONPATH": pythonpath})


def summary_rows(run: Path) -> list[dict]:
    with open(run / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_disagreement_between_a_torch_module_and_a_hf_model_maps_the_class_by_name(work):
    proc = digin(work, "task=disagreement", *torch_module(work), *hf(work, "classifier2"), "task.classes=[ship]",
                 "task.seeds=[0]", output="dis")
    assert proc.returncode == 0, proc.stderr
    (metrics,) = (work / "dis").glob("disagreement/runs/*/*_ship*/seed_0/metrics.json")
    data = json.loads(metrics.read_text())
    # ship is CIFAR-10 class 8 for f and id2label 2 for g: the same class by name, different indices.
    assert data["class_index"] == 8 and data["class2_index"] == 2 and data["prompt"] == "a photograph of a ship"
    assert {"p_f", "p_g"} <= set(data["iterates"][0])
    rows = summary_rows(metrics.parents[2])
    assert rows[0]["class"] == "ship" and rows[0]["class2"] == "ship" and rows[0]["status"] == "ok"
    assert "ship" in proc.stdout  # the end-of-run table


@pytest.mark.parametrize("which", ["torch_module", "hf"])
def test_vce_with_an_own_classifier_uses_its_names(work, which):
    cifar = (ASSETS / "cifar10_classes.txt").read_text().split()
    if which == "torch_module":  # the target found by CLIP-text similarity among the user's own names
        names, args = cifar, [*torch_module(work), "task.target_strategy=nearest_text"]
    else:  # typed with a space, spelt 'apple_pie' by the model's id2label
        names, args = HF_NAMES, [*hf(work), "task.targets=[apple pie]"]
    fast = ["task.inversion.inner_steps=2", "task.p2p.injections=[0.3]", "task.p2p.blends=[0.0]"]  # one schedule
    proc = digin(work, *VCE, *args, *fast, f"task.images={work / 'photo.png'}", output=f"vce_{which}")
    assert proc.returncode == 0, proc.stderr
    (metrics,) = (work / f"vce_{which}").glob("vce/runs/*/photo/*/metrics.json")
    data = json.loads(metrics.read_text())
    assert data["start"] in names and data["target"] in names and data["target"] != data["start"]
    assert metrics.parent.name.split("_", 1)[1] == data["target"]  # <index>_<the classifier's own name>
    if which == "hf":
        assert data["target"] == "apple_pie" and "apple pie" in data["target_prompt"]  # readable words in prompts
    assert data["caption"].startswith(f"an image of a {data['start']}")
    assert (metrics.parent / "counterfactual.png").is_file()
    row = summary_rows(metrics.parents[2])[0]
    assert (row["start"], row["target"], row["status"]) == (data["start"], data["target"], "ok")
    assert data["target"] in proc.stdout  # the end-of-run table


@pytest.mark.parametrize("drop,args,needles", [
    ([], ["classifier.model._target_=my_missing_pkg.nets.resnet20"],
     ["no module named 'my_missing_pkg'", "PYTHONPATH"]),
    ([], ["classifier.class_names=[a,b,c]"], ["3 names", "10 logits"]),
    ([], ["classifier.features_layer=avgpol"], ["unknown classifier.features_layer 'avgpol'", "avgpool"]),
    (["classifier.mean", "classifier.std"], [], ["classifier.mean, classifier.std", "meaningless gradients"]),
], ids=["import", "names", "features_layer", "preprocessing"])
def test_bad_torch_module_inputs_are_one_line_errors(work, drop, args, needles):
    keys = set(drop) | {a.split("=")[0] for a in args}
    overrides = [a for a in torch_module(work) if a.split("=")[0] not in keys]
    proc = digin(work, *VCE, *overrides, *args, f"task.images={work / 'photo.png'}", output="bad")
    one_line_error(proc, *needles)
    assert not list((work / "bad").glob("vce/runs/*/photo")), "no item folder is written before the error"


def test_hf_model_missing_offline_names_the_id_and_the_fix(work):
    proc = digin(work, *VCE, "classifier=food101", f"task.images={work / 'photo.png'}", output="bad")
    one_line_error(proc, "'nateraw/food'", "HF_HUB_OFFLINE", "classifier.pretrained=/local/folder")


def test_a_class_missing_from_the_label_sets_lists_close_matches_in_each(work):
    proc = digin(work, "task=disagreement", *torch_module(work), *hf(work, "classifier2"), "task.classes=[frogs]",
                 output="bad")
    one_line_error(proc, "classifier: unknown class 'frogs'", "'frog'", "classifier2: unknown class 'frogs'",
                   "pass a name both classifiers know")


def test_model_arguments_need_a_plus_and_the_error_says_so(work):
    args = [a.replace("+classifier.model", "classifier.model") for a in torch_module(work)]
    one_line_error(digin(work, *VCE, *args, output="bad"), "+classifier.model.num_classes=10")


def test_a_checkpoint_of_another_network_is_one_line_naming_keys(work):
    import torch

    wrong = work / "other_net.pt"
    torch.save({f"module.{k}": v for k, v in torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).state_dict().items()},
               wrong)
    args = [a for a in torch_module(work) if not a.startswith("classifier.checkpoint=")]
    proc = digin(work, *VCE, *args, f"classifier.checkpoint={wrong}", f"task.images={work / 'photo.png'}",
                 output="bad")
    one_line_error(proc, "does not fit the SmallNet architecture", "missing keys: features.0.weight",
                   "unexpected keys: 0.weight", "classifier.model")
