"""digin.load_generator / load_classifier / wrap_classifier / load_segmenter: the CLI presets with keyword arguments,
over the CLI's loaders, and one-line errors for bad names and options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from digin_cli.errors import DiginError


def test_generator_preset_matches_the_cli_loader_and_takes_settings(api, tiny):
    from omegaconf import OmegaConf

    from digin_cli.generation.models import load_generator

    gen = tiny[0]
    ref = load_generator(OmegaConf.load("conf/generator/tiny.yaml"))
    assert (gen.num_steps, gen.resolution, gen.sampler_name) == (3, 64, "ddim")
    for a, b in zip(gen.unet.parameters(), ref.unet.parameters()):
        assert torch.equal(a, b)  # the same seeded random SD: the preset's seed reached the loader
    lcm = api.load_generator("tiny", sampler="lcm", lora="tiny", guidance_scale=1.0)
    assert lcm.sampler_name == "lcm" and lcm.guidance_scale == 1.0
    # The LoRA was fused: the UNet's weights moved.
    assert any(not torch.equal(a, b) for a, b in zip(lcm.unet.parameters(), ref.unet.parameters()))


def test_a_model_folder_or_hub_id_is_the_sd15_preset_with_that_pretrained(api, tmp_path):
    with pytest.raises(DiginError) as err:
        api.load_generator(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(err.value) and "\n" not in str(err.value)


def test_classifier_presets_settings_and_bad_names(api, tiny):
    f = tiny[1]
    x = torch.rand(2, 3, 32, 32)
    from digin_cli.classifiers.tiny import TinyClassifier

    ref = TinyClassifier(seed=0, width=8, input_size=32, num_classes=1000)
    assert torch.allclose(f(x), ref(x))
    wide = api.load_classifier("tiny_a", width=4, num_classes=10)
    assert len(wide.class_names) == 10
    with pytest.raises(DiginError, match="unknown classifier 'tiny_c'.*tiny_a"):
        api.load_classifier("tiny_c")
    with pytest.raises(DiginError, match="has no option widht"):
        api.load_classifier("tiny_a", widht=4)
    with pytest.raises(DiginError, match="needs pretrained — pass e.g. pretrained="):
        api.load_classifier("hf")  # pretrained= is required, as classifier=hf says on the command line


def test_wrap_classifier_applies_the_given_preprocessing_to_any_module(api):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    clf = api.wrap_classifier(net, ["cat", "dog", "fox"], 24, mean, std, "bilinear")
    x = torch.rand(2, 3, 40, 40)
    expected = net((F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False, antialias=True)
                    - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(clf(x), expected, atol=1e-5)
    assert clf.class_names == ["cat", "dog", "fox"] and clf.num_features == 4
    with pytest.raises(DiginError):
        api.wrap_classifier(net, ["cat", "dog", "fox"], 24, [0.5, 0.5], std, "bilinear")


def test_segmenter_presets(api):
    from digin_cli.segmentation import NoSegmenter

    assert isinstance(api.load_segmenter("none"), NoSegmenter)
    sam = api.load_segmenter("tiny_sam", num_points=3)
    assert sam.num_points == 3
    with pytest.raises(DiginError, match="unknown segmentation 'sam_hd'.*sam_hq"):
        api.load_segmenter("sam_hd")


def test_method_defaults_are_the_config_groups(api, tiny):
    """Settings are the authors' defaults as conf/optimizer holds them, not a second copy."""
    from dataclasses import asdict

    gen, f, g = tiny
    adam, cutouts = api.optimizer_settings("adam")
    method = api.Disagreement(gen, f, g)
    assert asdict(method.settings) | {"optimizer": None} == asdict(adam) | {"optimizer": None}
    assert method.settings.checkpointing is True and method.settings.optimizer.func.__name__ == "Adam"
    assert (method.cutouts.num, method.cutouts.power, method.cutouts.noise_sd) == (16, 0.3, 0.005)
    prompt, _ = api.optimizer_settings("prompt")
    assert (prompt.select, prompt.fresh_latent, prompt.optimizer.func.__name__) == ("last", True, "AdamW")
    assert api.optimizer_settings("hard_prompt")[0].lr == 0.3  # hard_prompt.yaml on top of prompt.yaml
