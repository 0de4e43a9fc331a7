"""RealImageEditor on the tiny generator: identical-prompt editing reproduces the source, and the blend pins the
region it is asked to keep."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from digin_cli.counterfactual import RealImageEditor, Schedule
from digin_cli.generation.inversion import InversionCache
from digin_cli.generation.sampler import DDIMSampler
from digin_cli.optimize import OptimSettings


class BoxSegmenter:
    """The centre square is the object."""

    active = True

    def segment(self, image, attention, latent_hw):
        px = torch.zeros(1, 1, *image.shape[-2:])
        px[..., 16:48, 16:48] = 1
        return px, F.interpolate(px, size=latent_hw, mode="nearest")


def _prepared(tiny_sd, tmp_path):
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=64, mode="bilinear", align_corners=False)
    editor = RealImageEditor(tiny_sd, DDIMSampler(tiny_sd), BoxSegmenter(), InversionCache(tmp_path), "tiny:0",
                             inner_steps=2)
    return editor, editor.prepare(image, "an image of a fiddler crab", "fiddler crab")


def test_identical_prompt_injection_with_a_multi_token_class_reproduces_the_source(tiny_sd, tmp_path):
    editor, prep = _prepared(tiny_sd, tmp_path)
    calls = []

    def objective(images, augment=False, latents=None):
        calls.append(images)
        return images.mean(), {"loss": images.mean().item()}

    for keep in ("foreground", "background"):
        result, schedule, prompt = editor.edit(prep, None, objective, OptimSettings(steps=0), injections=(0.3,),
                                               blends=(0.3,), keep=keep)
        assert prompt == prep.source_prompt and (schedule.inject, schedule.blend) == (0.3, 0.3)
        assert prep.reconstruction.std() > 1e-3
        assert (result.initial.image - prep.reconstruction.cpu()).abs().max().item() <= 1e-6
    assert len(calls) == 2  # one candidate: no search pass, only the loop's evaluation of iterate 0
    # Another class name does change the image: the equality above is the identity mapping at work.
    other, _, _ = editor.edit(prep, "hermit crab", objective, OptimSettings(steps=0), injections=(0.3,),
                              blends=(0.0,))
    assert (other.initial.image - prep.reconstruction.cpu()).abs().max().item() > 1e-4


def test_blend_pins_the_kept_region_to_the_reconstruction(tiny_sd, tmp_path):
    editor, prep = _prepared(tiny_sd, tmp_path)
    z = torch.randn_like(prep.inversion.z_T)
    for keep, region in (("foreground", prep.latent_mask), ("background", 1 - prep.latent_mask)):
        hooks = editor.hooks(prep, Schedule(inject=0.0, blend=1.0), keep)
        blended = hooks.after_step(0, z)
        torch.testing.assert_close(blended * region, prep.trajectory[1] * region)
        torch.testing.assert_close(blended * (1 - region), z * (1 - region))
