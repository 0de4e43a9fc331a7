"""Cross-attention capture and Prompt-to-Prompt injection on the tiny random SD model."""

import copy

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from digin_cli.generation.attention import (AttentionController, CrossAttentionProcessor, attention_control,
                                            attention_maps, mask_map_size)
from digin_cli.generation.token_alignment import token_alignment, word_token_indices
from digin_cli.generation.sampler import DDIMSampler, SamplerHooks

SOURCE = "a photograph of a red fox"
TARGET = "a photograph of a tabby cat"


def _with_settings(sd, num_steps, guidance):
    clone = copy.copy(sd)
    clone.num_steps, clone.guidance_scale = num_steps, guidance
    return clone


def _cross_layers(unet):
    return [name.removesuffix(".processor") for name in unet.attn_processors if ".attn2." in name]


def _sample(sampler, z_T, cond, uncond, controller=None, **kwargs):
    """Sample (and decode) with ``controller`` installed, or with the UNet's own processors when None."""
    if controller is None:
        out = sampler.sample(z_T, cond, uncond, **kwargs)
        return out, sampler.decode(out.latents)
    hooks = SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs)
    with attention_control(sampler.sd.unet, controller):
        out = sampler.sample(z_T, cond, uncond, hooks=hooks, **kwargs)
        return out, sampler.decode(out.latents)


def _mse(a, b):
    return ((a - b) ** 2).mean().item()


def test_cross_attention_math_equals_diffusers_attnprocessor(tiny_sd):
    unet = tiny_sd.unet
    controller = AttentionController(4)
    x = torch.randn(2, 64, 32)
    context = torch.randn(2, 77, 32)
    for name in ("down_blocks.0.attentions.0.transformer_blocks.0.attn2",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn1"):
        attn = unet.get_submodule(name)
        context_or_none = context if name.endswith("attn2") else None
        with torch.no_grad():
            reference = AttnProcessor()(attn, x, context_or_none)
            ours = CrossAttentionProcessor(controller, name)(attn, x, context_or_none)
        assert reference.shape == ours.shape == (2, 64, 32)
        assert (reference - ours).abs().max().item() <= 1e-6


def test_off_mode_leaves_unet_and_sampler_unchanged(tiny_sd):
    unet = tiny_sd.unet
    original = dict(unet.attn_processors)
    sampler = DDIMSampler(tiny_sd)
    z_T, cond, uncond = tiny_sd.initial_latent(1), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding()
    z_in, t, context = torch.cat([z_T, z_T]), sampler.timesteps[0], torch.cat([uncond, cond])
    controller = AttentionController.for_sampler(sampler)
    with torch.no_grad():
        reference = unet(z_in, t, encoder_hidden_states=context).sample
        with attention_control(unet, controller):
            assert all(isinstance(p, CrossAttentionProcessor) for p in unet.attn_processors.values())
            ours = unet(z_in, t, encoder_hidden_states=context,
                            cross_attention_kwargs=controller.cross_attention_kwargs(0)).sample
        assert (reference - ours).abs().max().item() <= 1e-5
        _, image_ref = _sample(sampler, z_T, cond, uncond)
        _, image_off = _sample(sampler, z_T, cond, uncond, controller)
    assert (image_ref - image_off).abs().max().item() <= 1e-5
    assert controller.maps == {}
    # The original processors are back, the very same objects.
    assert all(unet.attn_processors[k] is v for k, v in original.items())


def test_store_records_every_step_and_cross_attention_layer(tiny_sd):
    sampler = DDIMSampler(tiny_sd)
    z_T, cond, uncond = tiny_sd.initial_latent(2), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding()
    layers = _cross_layers(tiny_sd.unet)
    # CrossAttnDownBlock2D (1, 8x8), CrossAttnUpBlock2D (2, 8x8) and the mid block (1, 4x4) of the tiny UNet.
    assert len(layers) == 4
    per_head = AttentionController.for_sampler(sampler, mode="store")
    averaged = AttentionController.for_sampler(sampler, mode="store", per_head=False)
    with torch.no_grad():
        _sample(sampler, z_T, cond, uncond, per_head)
        _sample(sampler, z_T, cond, uncond, averaged)
    expected = {(i, name) for i in range(sampler.num_steps) for name in layers}
    assert set(per_head.maps) == set(averaged.maps) == expected
    heads = tiny_sd.unet.get_submodule(layers[0]).heads
    for key, maps in per_head.maps.items():
        side = 4 if key[1].startswith("mid_block") else 8
        assert maps.shape == (1, heads, side, side, 77) and maps.device.type == "cpu"
        assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)  # softmax rows over the 77 tokens
        assert torch.allclose(averaged.maps[key], maps.mean(1), atol=1e-6)
        assert averaged.maps[key].shape == (1, side, side, 77)
    # Under guidance the conditional half is stored: at step 0 (same z_T) it equals the unguided pass's maps.
    unguided = _with_settings(tiny_sd, tiny_sd.num_steps, 1.0)
    sampler1 = DDIMSampler(unguided)
    cond_only = AttentionController.for_sampler(sampler1, mode="store")
    assert not cond_only.guided
    with torch.no_grad():
        _sample(sampler1, z_T, cond, None, cond_only)
    for name in layers:
        assert (cond_only.maps[(0, name)] - per_head.maps[(0, name)]).abs().max().item() <= 1e-6


def test_store_non_square_latents(tiny_sd):
    controller = AttentionController(1, guided=False, mode="store")
    z = torch.randn(1, 4, 8, 12)
    with torch.no_grad(), attention_control(tiny_sd.unet, controller):
        tiny_sd.unet(z, 999, encoder_hidden_states=tiny_sd.encode_prompt(SOURCE),
                     cross_attention_kwargs=controller.cross_attention_kwargs(0))
    assert controller.latent_hw == (8, 12)
    assert {m.shape[2:] for m in controller.maps.values()} == {(8, 12, 77), (4, 6, 77)}
    assert controller.spatial_size(24) == (4, 6) and controller.spatial_size(6) == (2, 3)


def test_controller_errors(tiny_sd):
    with pytest.raises(ValueError):
        AttentionController(4, mode="replace")
    with pytest.raises(ValueError):
        AttentionController(4, window=(0.6, 0.2))
    controller = AttentionController(4, mode="store")
    z = torch.randn(2, 4, 8, 8)
    context = torch.cat([tiny_sd.null_embedding(), tiny_sd.encode_prompt(SOURCE)])
    with torch.no_grad(), attention_control(tiny_sd.unet, controller):
        with pytest.raises(ValueError, match="step index"):  # no per-step kwargs: the sampler hook is missing
            tiny_sd.unet(z, 999, encoder_hidden_states=context)
        controller.mode = "inject"
        with pytest.raises(KeyError, match="store pass"):
            tiny_sd.unet(z, 999, encoder_hidden_states=context,
                         cross_attention_kwargs=controller.cross_attention_kwargs(0))
    assert [controller.strength(i) for i in range(4)] == [1.0] * 4
    controller.window = (0.25, 0.75)
    assert [controller.strength(i) for i in range(4)] == [0.0, 1.0, 1.0, 0.0]


def test_injecting_the_same_prompt_reproduces_the_source(tiny_sd, tokenizer):
    sampler = DDIMSampler(tiny_sd)
    z_T, cond, uncond = tiny_sd.initial_latent(4), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding()
    controller = AttentionController.for_sampler(sampler, mode="store")
    with torch.no_grad():
        _, source = _sample(sampler, z_T, cond, uncond, controller)
        controller.mode = "inject"
        _, injected = _sample(sampler, z_T, cond, uncond, controller)
        controller.token_map = token_alignment(tokenizer, SOURCE, SOURCE, "fox", "fox")
        assert torch.equal(controller.token_map, torch.eye(77))
        _, remapped = _sample(sampler, z_T, cond, uncond, controller)
    # Measured: exactly 0.0 (the stored maps are the ones the pass recomputes).
    assert (injected - source).abs().max().item() <= 1e-6
    assert (remapped - source).abs().max().item() <= 1e-6
    assert source.std() > 1e-3
    # Head-averaged maps (per_head=False, for masks) give every head the same map: the image changes.
    averaged = AttentionController.for_sampler(sampler, mode="store", per_head=False)
    with torch.no_grad():
        _sample(sampler, z_T, cond, uncond, averaged)
        averaged.mode = "inject"
        _, from_average = _sample(sampler, z_T, cond, uncond, averaged)
    assert (from_average - source).abs().max().item() > 1e-3  # measured 0.0128 (seed 4), 0.014-0.019 (seeds 0-3)


def test_injection_keeps_the_source_layout(tiny_sd, tokenizer):
    sd = _with_settings(tiny_sd, 5, 3.0)
    sampler = DDIMSampler(sd)
    z_T, uncond = sd.initial_latent(0), sd.null_embedding()
    cond_source, cond_target = sd.encode_prompt(SOURCE), sd.encode_prompt(TARGET)
    controller = AttentionController.for_sampler(sampler, mode="store")
    with torch.no_grad():
        source_out, source = _sample(sampler, z_T, cond_source, uncond, controller)
        plain_out, plain = _sample(sampler, z_T, cond_target, uncond)
        controller.mode = "inject"
        controller.token_map = token_alignment(tokenizer, SOURCE, TARGET, "red fox", "tabby cat",
                                              embed=tiny_sd.encode_prompt)
        results = {}
        for window in [(0.0, 0.5), (0.0, 1.0)]:
            controller.window = window
            results[window] = _sample(sampler, z_T, cond_target, uncond, controller)
    plain_image, plain_latent = _mse(plain, source), _mse(plain_out.latents, source_out.latents)
    assert plain_image > 0  # the class-word swap changes the image
    # Measured (tiny random model, 5 steps, guidance 3, seed 0): image MSE to the source 5.32e-6 without injection,
    # 4.99e-6 with window (0, 0.5) and with the full window; latent MSE 9.30e-3 -> 9.03e-3 / 9.03e-3. The effect is
    # small with random weights but strict (same ordering for seeds 0-3 and 4-6 steps).
    for window, (out, image) in results.items():
        assert _mse(image, source) < plain_image, window
        assert _mse(out.latents, source_out.latents) < plain_latent, window


def test_injecting_the_same_two_token_class_reproduces_the_source(tiny_sd, tokenizer):
    prompt = "a photograph of a fiddler crab"
    sampler = DDIMSampler(tiny_sd)
    z_T, cond, uncond = tiny_sd.initial_latent(4), tiny_sd.encode_prompt(prompt), tiny_sd.null_embedding()
    controller = AttentionController.for_sampler(sampler, mode="store")
    with torch.no_grad():
        _, source = _sample(sampler, z_T, cond, uncond, controller)
        controller.mode = "inject"
        controller.token_map = token_alignment(tokenizer, prompt, prompt, "fiddler crab", "fiddler crab",
                                               embed=tiny_sd.encode_prompt)
        _, remapped = _sample(sampler, z_T, cond, uncond, controller)
    assert source.std() > 1e-3
    assert (remapped - source).abs().max().item() <= 1e-6


def test_attention_maps_normalised(tiny_sd, tokenizer):
    sampler = DDIMSampler(tiny_sd)
    controller = AttentionController.for_sampler(sampler, mode="store")
    with torch.no_grad():
        _sample(sampler, tiny_sd.initial_latent(5), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding(),
                controller)
    tokens = word_token_indices(tokenizer, SOURCE, "red fox")
    mask = attention_maps(controller, tokens, resolution=16)
    assert mask.shape == (16, 16)
    assert mask.min() >= 0 and mask.max() <= 1 and mask.max() > 0.9  # max 1 before the bicubic resize
    assert mask.std() > 0
    # Default steps = first half (i/T < 0.5); with all steps the map differs; per-head and averaged agree.
    everything = attention_maps(controller, tokens, range(tiny_sd.num_steps), 64)
    assert everything.shape == (64, 64) and 0.9 < everything.max() <= 1
    assert attention_maps(controller, tokens, resolution=8).max() == 1  # the maps' own size: no resize
    first_half = attention_maps(controller, tokens, range(2), 16)
    assert torch.equal(mask, first_half)
    controller.maps = {k: v.mean(1) for k, v in controller.maps.items()}
    assert torch.allclose(attention_maps(controller, tokens, resolution=16), mask, atol=1e-6)
    with pytest.raises(ValueError):
        attention_maps(controller, tokens, range(10, 12), 16)


def _injected_grad(sd, controller, checkpointing):
    sampler = DDIMSampler(sd, checkpointing=checkpointing)
    z_T = sd.initial_latent(6).requires_grad_(True)
    hooks = SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs)
    # backward stays inside the context: checkpointing recomputes the steps with the processors then installed.
    with attention_control(sd.unet, controller):
        out = sampler.sample(z_T, sd.encode_prompt(TARGET), sd.null_embedding(), hooks=hooks, keep_last=2)
        image = sampler.decode(out.latents)
        target = torch.linspace(0, 1, image.numel()).reshape(image.shape)
        loss = ((image - target) ** 2).mean() + sum(x.square().mean() for x in out.x0_predictions)
        loss.backward()
    return z_T.grad


def test_gradients_flow_through_injection_with_checkpointing(tiny_sd, tokenizer):
    sampler = DDIMSampler(tiny_sd)
    controller = AttentionController.for_sampler(sampler, mode="store")
    with torch.no_grad():
        _sample(sampler, tiny_sd.initial_latent(6), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding(),
                controller)
    stored = {k: v.clone() for k, v in controller.maps.items()}
    controller.mode, controller.window = "inject", (0.0, 0.5)
    controller.token_map = token_alignment(tokenizer, SOURCE, TARGET, "red fox", "tabby cat",
                                              embed=tiny_sd.encode_prompt)
    plain = _injected_grad(tiny_sd, controller, checkpointing=False)
    ckpt = _injected_grad(tiny_sd, controller, checkpointing=True)
    assert plain.abs().sum() > 0
    assert ((plain - ckpt).norm() / plain.norm()).item() <= 1e-5
    # Injection is read-only: the recomputation during backward found the same maps.
    assert all(torch.equal(stored[k], v) for k, v in controller.maps.items())
    # ... and it was active: without it the gradient differs.
    controller.mode = "off"
    off = _injected_grad(tiny_sd, controller, checkpointing=True)
    assert ((plain - off).norm() / plain.norm()).item() > 1e-3


def _planted_controller(latent_side, blobs):
    """A controller holding planted per-head maps: ``blobs`` = {height: (value, rows, cols)} over 2 steps."""
    controller = AttentionController(2, guided=False, mode="store")
    controller.latent_hw = (latent_side, latent_side)
    for side, (value, rows, cols) in blobs.items():
        for layer in ("down", "up"):
            maps = torch.full((1, 2, side, side, 77), 0.01)
            maps[:, :, rows(side), cols(side), 5] = value
            for step in range(2):
                controller.maps[(step, f"{layer}_{side}")] = maps
    return controller


def test_mask_maps_come_from_the_quarter_latent_side():
    first, second = (lambda n: slice(0, n // 2)), (lambda n: slice(n // 2, n))
    # At 512 px the latents are 64x64: the 16x16 maps put the object top-left; the sharper 64/32/8 maps (and
    # much larger values) say bottom-right. The mask follows the 16x16 maps only, as the authors' code.
    controller = _planted_controller(64, {64: (50.0, second, second), 32: (20.0, second, second),
                                          16: (1.0, first, first), 8: (9.0, second, second)})
    assert mask_map_size(controller) == (16, 16)
    mask = attention_maps(controller, [5], range(1), 512, sizes={16})
    assert mask.shape == (512, 512)
    assert mask[:200, :200].min() > 0.95 and mask[312:, 312:].max() < 0.05
    # Max-normalised at 16x16, then bicubic (not bilinear) upsampling, clamped to [0, 1].
    planted = torch.full((16, 16), 0.01)
    planted[:8, :8] = 1.0
    bicubic = torch.nn.functional.interpolate(planted[None, None], size=(512, 512), mode="bicubic")[0, 0]
    assert torch.allclose(mask, bicubic.clamp(0, 1), atol=1e-6)
    # Everything averaged (no size filter) is dominated by the large sharp maps: bottom-right.
    mixed = attention_maps(controller, [5], range(1), 512)
    assert mixed[312:, 312:].mean() > mixed[:200, :200].mean()


def test_mask_maps_fall_back_to_the_nearest_size():
    whole = lambda n: slice(0, n)  # noqa: E731
    # The tiny UNet: 8x8 latents, maps of 8x8 and 4x4; latent/4 = 2 does not exist, 4 is nearest.
    assert mask_map_size(_planted_controller(8, {8: (1.0, whole, whole), 4: (1.0, whole, whole)})) == (4, 2)
    assert mask_map_size(_planted_controller(96, {48: (1.0, whole, whole), 12: (1.0, whole, whole)})) == (12, 24)
    assert mask_map_size(_planted_controller(64, {32: (1.0, whole, whole), 1: (1.0, whole, whole)})) == (32, 16)
    with pytest.raises(ValueError, match="store pass"):
        mask_map_size(AttentionController(2))


def test_store_keeps_only_the_requested_steps_on_the_probabilities_device(tiny_sd):
    sampler = DDIMSampler(tiny_sd)
    z_T, cond, uncond = tiny_sd.initial_latent(2), tiny_sd.encode_prompt(SOURCE), tiny_sd.null_embedding()
    everything = AttentionController.for_sampler(sampler, mode="store")
    some = AttentionController.for_sampler(sampler, mode="store", store_steps=[0, 2])
    assert everything.store_device is None  # maps stay where the UNet computed them: no copy back per step
    with torch.no_grad():
        _sample(sampler, z_T, cond, uncond, everything)
        _sample(sampler, z_T, cond, uncond, some)
    assert everything.steps == [0, 1, 2, 3] and some.steps == [0, 2]
    assert all(torch.equal(some.maps[key], everything.maps[key]) for key in some.maps)
    # Injection within the stored steps reproduces the source; outside them it is plain attention.
    some.mode, some.window = "inject", (0.0, 0.5)
    with pytest.raises(KeyError, match="step 1"):
        with torch.no_grad():
            _sample(sampler, z_T, cond, uncond, some)
