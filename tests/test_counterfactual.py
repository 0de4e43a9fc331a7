"""RealImageEditor on tiny components: what prepare keeps, and edit's guard on the injection window."""

import pytest
import torch

from digin_cli.counterfactual import RealImageEditor
from digin_cli.generation.inversion import InversionCache
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.objectives import Counterfactual, ForegroundAwareDistance
from digin_cli.optimize import OptimSettings
from digin_cli.segmentation.base import AttentionSegmenter


def _image():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    blob = ((xx ** 2 + yy ** 2) < 0.3).float()
    return torch.stack([0.2 + 0.7 * blob, 0.5 - 0.2 * blob, 0.8 - 0.6 * blob])[None]


def test_prepare_stores_only_the_injection_window_and_mask_steps(tiny_sd, tmp_path):
    sampler = DDIMSampler(tiny_sd)  # T = 4
    editor = RealImageEditor(tiny_sd, sampler, AttentionSegmenter(), InversionCache(tmp_path), "tiny:0",
                             inner_steps=1, mask_steps=0.25, max_injection=0.5)
    assert editor.stored_steps() == [0, 1]  # i/T < 0.5; the mask's first quarter lies inside
    prepared = editor.prepare(_image(), "an image of a red fox", "red fox")
    assert prepared.controller.steps == [0, 1]
    assert {m.device for m in prepared.controller.maps.values()} == {tiny_sd.device}
    assert RealImageEditor(tiny_sd, sampler, AttentionSegmenter(), InversionCache(tmp_path), "tiny:0",
                           mask_steps=1.0, max_injection=0.3).stored_steps() == [0, 1, 2, 3]
    # A window wider than what was stored is refused up front, not half-way through the schedule search.
    inv = prepared.inversion
    objective = Counterfactual(lambda x: torch.zeros(x.shape[0], 10), 1,
                               ForegroundAwareDistance(inv.original, inv.latent_original, prepared.px_mask,
                                                       prepared.latent_mask), None)
    with pytest.raises(ValueError, match="max_injection"):
        editor.edit(prepared, "tabby cat", objective, OptimSettings(steps=0), injections=(0.3, 0.75))
