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


def test_a_caption_naming_the_class_twice_loses_it_twice(tiny_sd, tmp_path):
    """The authors replace every occurrence of the start label; replacing only the first would keep the start
    class in the target prompt."""
    from digin_cli.counterfactual import replace_words

    assert replace_words("an image of a Red fox chasing a red fox, red foxes", "red fox", "tabby cat") == (
        "an image of a tabby cat chasing a tabby cat, red foxes")  # whole words only, any case
    with pytest.raises(ValueError, match="does not occur"):
        replace_words("an image of a cat", "red fox", "dog")
    editor = RealImageEditor(tiny_sd, DDIMSampler(tiny_sd), BoxSegmenter(), InversionCache(tmp_path), "tiny:0",
                             inner_steps=1)
    prep = editor.prepare(_image(), "an image of a red fox next to another red fox", "red fox")
    objective = Counterfactual(lambda x: torch.zeros(x.shape[0], 10), 1,
                               ForegroundAwareDistance(prep.inversion.original, prep.inversion.latent_original,
                                                       prep.px_mask, prep.latent_mask), None)
    _, _, prompt = editor.edit(prep, "tabby cat", objective, OptimSettings(steps=0), injections=(0.3,),
                               blends=(0.0,))
    assert prompt == "an image of a tabby cat next to another tabby cat"
    mapping = prep.controller.token_map.cpu()
    tok = tiny_sd.tokenizer
    ids = tok(prompt).input_ids
    cat = tok("tabby cat", add_special_tokens=False).input_ids
    second = [j for j in range(8, len(ids)) if ids[j:j + len(cat)] == cat][0]
    source_second = tok(prep.source_prompt).input_ids.index(3240, 7)  # the second 'fox' token
    assert mapping[source_second - 1:source_second + 1, second:second + len(cat)].sum() == 2  # its own columns


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


def test_keep_object_pins_the_first_samples_foreground_and_the_object_moves_less(tiny_sd):
    """task=neuron's keep_object: generated_object segments the first SD sample (identical to a plain sample) and
    pin_region holds its foreground, entering steps i < 0.3 T (z_T included), at that sample's trajectory while the
    optimiser moves z_T; the object then changes less than without the pin (measured 0.019 vs 0.032 mean |Δ|)."""
    from digin_cli.counterfactual import generated_object, pin_region
    from digin_cli.generation.sampler import SamplerHooks
    from digin_cli.optimize import DiginOptimizer

    sampler = DDIMSampler(tiny_sd)
    null, z = tiny_sd.null_embedding(), tiny_sd.initial_latent(0)
    prompt = "a photograph of a goldfish"
    obj = generated_object(tiny_sd, sampler, BoxSegmenter(), z, prompt, null, "goldfish")
    with torch.no_grad():
        plain = sampler.sample(z, tiny_sd.encode_prompt(prompt), null, keep_trajectory=True)
        torch.testing.assert_close(obj.image, sampler.decode(plain.latents), rtol=0, atol=1e-6)
    assert len(obj.trajectory) == sampler.num_steps + 1 and 0 < obj.latent_mask.mean() < 1

    def objective(images, augment=False, latents=None):
        loss = -images.mean()
        return loss, {"loss": loss.item()}

    changes, pinned_inputs = {}, []
    for until in (0.0, 0.3):
        hook = pin_region(obj.latent_mask, obj.trajectory, until, sampler.num_steps)

        def spy(i, x, hook=hook):
            out = hook(i, x)
            pinned_inputs.append((i, out.detach()))
            return out

        hooks = SamplerHooks(before_step=spy if hook else None)
        result = DiginOptimizer(sampler, OptimSettings(steps=4, lr=0.1), hooks).run(
            z, tiny_sd.encode_prompt(prompt), null, objective)
        assert result.best_index > 0
        diff = (result.best.image - obj.image.cpu()).abs().mean(1, keepdim=True)
        changes[until] = float((diff * obj.px_mask).sum() / obj.px_mask.sum())
    m = obj.latent_mask
    assert {i for i, _ in pinned_inputs} == set(range(sampler.num_steps))
    for i, x in pinned_inputs:
        if i < 0.3 * sampler.num_steps:  # steps 0 and 1 of 4: the foreground is the first sample's, every iterate
            torch.testing.assert_close(x * m, obj.trajectory[i] * m)
    assert changes[0.3] < 0.75 * changes[0.0], changes
