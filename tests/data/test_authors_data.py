"""The authors' ImageNet UVCE set-up shipped as package data: WordNet clusters, their image list, and vce's use of
them (task.target_strategy=wordnet_cluster, task.image_list=dig_in)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from digin_cli.classifiers.tiny import imagenet_class_names
from digin_cli.data.authors import imagenet_clusters, uvce_image_list, wordnet_cluster
from digin_cli.data.images import InputImage
from digin_cli.errors import DiginError
from digin_cli.tasks.vce import _listed, targets_for

DATA = Path(__file__).resolve().parents[2] / "digin_cli" / "data" / "dig_in"


def test_data_files_name_their_source_and_are_package_data():
    for name in ("imagenet_clusters.json", "uvce_image_start_target.json"):
        assert "M4xim4l/DiG-IN" in json.loads((DATA / name).read_text())["source"]
        assert name in (DATA / "README.md").read_text()
    pyproject = (DATA.parents[2] / "pyproject.toml").read_text()
    assert '"data/dig_in/*.json"' in pyproject


def test_wordnet_cluster_of_known_classes():
    names = imagenet_class_names()
    assert len(imagenet_clusters()) == 128 and sum(len(m) for _, m in imagenet_clusters()) == 672
    group, others = wordnet_cluster(277)  # red fox
    assert group == "fox" and [names[i] for i in others] == ["grey fox", "kit fox", "Arctic fox"]
    group, others = wordnet_cluster(26)  # common newt, in the authors' 'amphibian' group of 8 classes
    assert group == "amphibian" and sorted(others) == [25, 27, 28, 29, 30, 31, 32] and 26 not in others
    assert wordnet_cluster(7) is None  # cock: in no group (the authors skip such images)
    # A class in two groups gets the first, as find_cluster_for_class_idx iterates the dict in order.
    twice = [c for c in range(1000) if sum(c in m for _, m in imagenet_clusters()) > 1]
    assert twice
    first = next(name for name, members in imagenet_clusters() if twice[0] in members)
    assert wordnet_cluster(twice[0])[0] == first


def test_the_authors_image_list():
    rows = uvce_image_list()
    assert len(rows) == 568 and rows[0] == (357, 7, None)
    assert all(0 <= i < 50000 and 0 <= s < 1000 for i, s, _ in rows)
    assert len({i for i, _, _ in rows}) == 567  # val image 13556 is listed twice; digin runs it once
    # ImageNet val holds 50 images per class in class order: the listed start class is the image's label.
    assert all(i // 50 == s for i, s, _ in rows)
    assert sum(wordnet_cluster(s) is not None for _, s, _ in rows) == 512  # the others are skipped, as theirs


def _task(**kw):
    base = {"pairs": [], "targets": [], "target_strategy": "wordnet_cluster", "num_targets": 1, "start": "label",
            "images": None, "indices": [], "image_classes": [], "image_list": None}
    return OmegaConf.create({**base, **kw})


def _item(label):
    return InputImage(image=torch.zeros(1, 3, 8, 8), name="val_00000", path=Path("val_00000.JPEG"), label=label,
                      index=0)


def test_wordnet_cluster_targets_are_the_cluster_minus_the_start_class(capsys):
    f = SimpleNamespace(class_names=imagenet_class_names())
    ctx = SimpleNamespace(cfg=OmegaConf.create({"task": _task()}))
    probs = torch.zeros(1000)
    probs[277] = 1.0
    targets = targets_for(ctx, f, _item(277), 277, probs, None)
    assert targets == [280, 278, 279]  # every other fox, whatever num_targets says (the authors use them all)
    # A start class in no group: no targets and a warning line, as the authors skip it.
    probs7 = torch.zeros(1000)
    probs7[7] = 1.0
    assert targets_for(ctx, f, _item(7), 7, probs7, None) == []
    assert "none of the authors' WordNet clusters" in capsys.readouterr().err
    # An image the list gives a target keeps it; a null target falls back to the strategy.
    assert targets_for(ctx, f, _item(277), 277, probs, None, (277, 278)) == [278]
    assert targets_for(ctx, f, _item(277), 277, probs, None, (277, None)) == [280, 278, 279]


def test_error_visualisation_may_explain_toward_the_label():
    """fig8 (the authors' error visualisation): start = label = target is allowed only for a misclassified image."""
    f = SimpleNamespace(class_names=imagenet_class_names())
    ctx = SimpleNamespace(cfg=OmegaConf.create({"task": _task(targets=["viaduct"])}))
    viaduct, arch = 888, 821
    wrong = torch.zeros(1000)
    wrong[arch] = 1.0
    assert targets_for(ctx, f, _item(viaduct), viaduct, wrong, None) == [viaduct]
    right = torch.zeros(1000)
    right[viaduct] = 1.0
    with pytest.raises(DiginError, match="equals the start class"):
        targets_for(ctx, f, _item(viaduct), viaduct, right, None)


def test_image_list_option():
    assert _listed(_task()) is None
    listed = _listed(_task(image_list="dig_in"))
    assert len(listed) == 567 and listed[357] == (7, None)
    with pytest.raises(DiginError, match="task.image_list=dig_in"):
        _listed(_task(image_list="mine"))
    with pytest.raises(DiginError, match="leave task.images, task.indices"):
        _listed(_task(image_list="dig_in", indices=[3]))
