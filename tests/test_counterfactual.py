"""RealImageEditor on the tiny generator: what prepare keeps, edit's guard on the injection window, identical-prompt
editing reproduces the source, and the blend pins the region it is asked to keep."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from digin_cli.counterfactual import RealImageEditor, Schedule
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
        assert hooks.after_step is None
        # The authors' timing: the latent *entering* step 0 (z_T) is pinned to the reconstruction's z_T, which the
        # old hook (output of step i blended with trajectory[i + 1]) never touched.
        blended = hooks.before_step(0, z)
        torch.testing.assert_close(blended * region, prep.trajectory[0] * region)
        torch.testing.assert_close(blended * (1 - region), z * (1 - region))


def test_blend_replaces_the_latents_entering_the_first_30_percent_of_ten_steps(tiny_sd, tmp_path):
    """A spy on the hook, T = 10, blend 0.3: exactly the latents entering steps 0, 1, 2 (z_T included) are replaced,
    each by the reconstruction's latent entering the same step (DiG-IN sd_backprop_pipe.py, step_function)."""
    import copy

    sd10 = copy.copy(tiny_sd)
    sd10.num_steps = 10
    sampler = DDIMSampler(sd10)
    assert sampler.num_steps == 10
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=64, mode="bilinear", align_corners=False)
    editor = RealImageEditor(sd10, sampler, BoxSegmenter(), InversionCache(tmp_path), "tiny:0", inner_steps=1)
    prep = editor.prepare(image, "an image of a fiddler crab", "fiddler crab")
    for keep, region in (("foreground", prep.latent_mask), ("background", 1 - prep.latent_mask)):
        hooks = editor.hooks(prep, Schedule(inject=0.0, blend=0.3), keep)
        seen, hook = [], hooks.before_step

        def spy(i, z, hook=hook):
            out = hook(i, z)
            seen.append((i, z, out))
            return out

        hooks.before_step = spy
        z_T = torch.randn(prep.inversion.z_T.shape, generator=g)
        with torch.no_grad():
            sampler.sample(z_T, sd10.encode_prompt("an image of a hermit crab"), prep.inversion.uncond, hooks=hooks)
        assert [i for i, _, _ in seen] == list(range(10))
        assert seen[0][1] is z_T
        replaced = [i for i, z, out in seen if not torch.equal(z, out)]
        assert replaced == [0, 1, 2], replaced
        for i in replaced:
            torch.testing.assert_close(seen[i][2] * region, prep.trajectory[i] * region)
            torch.testing.assert_close(seen[i][2] * (1 - region), seen[i][1] * (1 - region))
