"""The differentiable DDIM sampler against diffusers' StableDiffusionPipeline, and its gradients."""

import copy

import pytest
import torch

from digin_cli.generation.models import StableDiffusion
from digin_cli.generation.sampler import DDIMSampler

PROMPT = "a photograph of a red fox"


def _with_settings(sd: StableDiffusion, num_steps: int, guidance: float) -> StableDiffusion:
    clone = copy.copy(sd)
    clone.num_steps, clone.guidance_scale = num_steps, guidance
    return clone


def _reference(sd, latents, num_steps, guidance):
    out = sd.pipe(PROMPT, num_inference_steps=num_steps, guidance_scale=guidance, latents=latents.clone(),
                  height=sd.resolution, width=sd.resolution, output_type="pt")
    return out.images


@pytest.mark.parametrize("num_steps,guidance", [(4, 3.0), (1, 3.0), (4, 1.0), (3, 7.5)])
def test_zero_delta_image_equals_diffusers_pipeline(tiny_sd, num_steps, guidance):
    sd = _with_settings(tiny_sd, num_steps, guidance)
    z_T = sd.initial_latent(11)
    reference = _reference(sd, z_T, num_steps, guidance)
    sampler = DDIMSampler(sd)
    cond, uncond = sd.encode_prompt(PROMPT), sd.null_embedding()
    zero = torch.zeros((num_steps, *cond.shape))
    with torch.no_grad():
        ours = sampler.decode(sampler.sample(z_T, cond + zero, uncond + zero).latents)
    assert ours.shape == reference.shape == (1, 3, 64, 64)
    assert (ours - reference).abs().max().item() <= 1e-5
    assert reference.std() > 1e-3  # the comparison is not between two blank images


def test_seeded_latent_matches_pipeline_cpu_generator(tiny_sd):
    sd = _with_settings(tiny_sd, 2, 3.0)
    reference = sd.pipe(PROMPT, num_inference_steps=2, guidance_scale=3.0, output_type="pt", height=64, width=64,
                        generator=torch.Generator("cpu").manual_seed(5)).images
    sampler = DDIMSampler(sd)
    with torch.no_grad():
        ours = sampler.decode(sampler.sample(sd.initial_latent(5), sd.encode_prompt(PROMPT), sd.null_embedding()).latents)
    assert (ours - reference).abs().max().item() <= 1e-5
    assert not torch.equal(sd.initial_latent(5), sd.initial_latent(6))


def _grads(sd, checkpointing):
    sampler = DDIMSampler(sd, checkpointing=checkpointing)
    z_T = sd.initial_latent(3).requires_grad_(True)
    cond, uncond = sd.encode_prompt(PROMPT), sd.null_embedding()
    dc = torch.zeros((sd.num_steps, *cond.shape), requires_grad=True)
    du = torch.zeros((sd.num_steps, *uncond.shape), requires_grad=True)
    out = sampler.sample(z_T, cond + dc, uncond + du, keep_last=2)
    images = [sampler.decode(x) for x in out.x0_predictions] + [sampler.decode(out.latents)]
    target = torch.linspace(0, 1, images[0].numel()).reshape(images[0].shape)
    loss = sum((w + 1) * ((img - target) ** 2).mean() for w, img in enumerate(images))
    loss.backward()
    return z_T.grad, dc.grad, du.grad


def test_checkpointed_gradients_equal_plain_backprop(tiny_sd):
    plain = _grads(tiny_sd, checkpointing=False)
    ckpt = _grads(tiny_sd, checkpointing=True)
    for a, b in zip(plain, ckpt):
        assert a.abs().sum() > 0
        assert ((a - b).norm() / a.norm()).item() <= 1e-5
    # Every step's deltas receive gradient: the chain is differentiated end to end.
    assert all(plain[1][i].abs().sum() > 0 for i in range(tiny_sd.num_steps))


def test_keep_last_and_trajectory(tiny_sd):
    sampler = DDIMSampler(tiny_sd)
    with torch.no_grad():
        out = sampler.sample(tiny_sd.initial_latent(0), tiny_sd.encode_prompt(PROMPT), tiny_sd.null_embedding(),
                             keep_last=3, keep_trajectory=True)
    assert len(out.x0_predictions) == 3
    assert len(out.trajectory) == tiny_sd.num_steps + 1
    assert torch.equal(out.trajectory[-1], out.latents)
    # x0-predictions approach the final sample as the chain ends.
    dists = [(x - out.latents).norm().item() for x in out.x0_predictions]
    assert dists[-1] < dists[0]
