"""make fig10 / fig11 / neurons_salient presets fail in a second, with one line, when data or weights are missing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("figure,missing,needles", [
    ("fig10", (), ["paths.imagenet_val", "IMAGENET_VAL"]),
    ("fig11", (), ["paths.imagenet_val", "IMAGENET_VAL"]),
    ("fig11", ("IMAGENET_VAL",), ["paths.imagenet_train", "IMAGENET_TRAIN"]),
    ("fig10", ("IMAGENET_VAL",), ["classifier.checkpoint"]),
    ("fig11", ("IMAGENET_VAL", "IMAGENET_TRAIN"), ["classifier.checkpoint"]),
    ("neurons_salient", (), ["classifier.checkpoint"]),
])
def test_paper_figures_fail_fast_without_data(data, digin_here, expect_error, monkeypatch, tmp_path, figure, missing,
                                               needles):
    for name in ("IMAGENET_VAL", "IMAGENET_TRAIN"):
        monkeypatch.delenv(name, raising=False)
    for name in missing:
        monkeypatch.setenv(name, str(data / "train"))  # any existing folder: the check after it must fire
    proc = digin_here(f"experiment={figure}", output=tmp_path, tiny=False)
    expect_error(proc, *needles)
    assert not list(tmp_path.glob("*/runs/*/*/metrics.json"))


def test_class_neuron_preset_keeps_the_object():
    """experiment=neurons_salient: the authors' 14 default class-neuron pairs, with the object kept."""
    from hydra import compose, initialize_config_dir

    from digin_cli.configs import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=["experiment=neurons_salient"])
    assert cfg.task.name == "neuron" and cfg.task.keep_object is True and cfg.segmentation.name == "sam_hq"
    assert [list(p) for p in cfg.task.pairs][:2] == [[83, 565], [120, 870]] and len(cfg.task.pairs) == 14
    assert cfg.task.keep_until == 0.3
