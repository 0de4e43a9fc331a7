"""The differentiable LCM sampler against diffusers' StableDiffusionPipeline + LCMScheduler + a fused LoRA."""

import copy
import os

import pytest
import torch
from diffusers import LCMScheduler

from digin_cli.api.builders import preset
from digin_cli.generation.lcm import LCMSampler
from digin_cli.generation.models import tiny_lora, tiny_pipeline

PROMPT = "a photograph of a bee"


@pytest.fixture(scope="module")
def reference_pipe():
    """Built independently of our loader: tiny pipeline, LoRA loaded and fused by diffusers, LCM scheduler."""
    pipe = tiny_pipeline(0)
    pipe.load_lora_weights(str(tiny_lora(os.environ["DIGIN_CACHE"], 0)))
    pipe.fuse_lora()
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _with_settings(sd, num_steps, guidance):
    clone = copy.copy(sd)
    clone.num_steps, clone.guidance_scale = num_steps, guidance
    return clone


@pytest.mark.parametrize("num_steps,guidance", [(4, 1.0), (1, 1.0), (4, 1.5), (1, 1.5)])
def test_image_equals_diffusers_lcm_pipeline_with_fused_lora(tiny_lcm_sd, reference_pipe, num_steps, guidance):
    sd = _with_settings(tiny_lcm_sd, num_steps, guidance)
    with torch.no_grad():
        reference = reference_pipe(PROMPT, num_inference_steps=num_steps, guidance_scale=guidance, height=64,
                                   width=64, output_type="pt", generator=torch.Generator("cpu").manual_seed(7)).images
        sampler = LCMSampler(sd)
        z_T, noise = sampler.seeded_start(7)
        ours = sampler.decode(sampler.sample(z_T, sd.encode_prompt(PROMPT), sd.null_embedding(), noise=noise).latents)
    assert (ours - reference).abs().max().item() <= 1e-5
    assert reference.std() > 1e-3


def test_lora_is_fused_and_changes_the_unet(tiny_lcm_sd, tiny_sd):
    # The LoRA is merged into plain Linear weights (no peft wrappers left at sampling time) and is not a no-op.
    q = tiny_lcm_sd.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert type(q) is torch.nn.Linear
    q0 = tiny_sd.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert (q.weight - q0.weight).abs().max() > 1e-3


def test_fresh_noise_between_steps_depends_on_the_seed_only(tiny_lcm_sd):
    sampler = LCMSampler(tiny_lcm_sd)
    cond = tiny_lcm_sd.encode_prompt(PROMPT)
    z_T, noise = sampler.seeded_start(3)
    _, other = sampler.seeded_start(4)
    with torch.no_grad():
        a = sampler.sample(z_T, cond, noise=noise).latents
        b = sampler.sample(z_T, cond, noise=sampler.seeded_start(3)[1]).latents
        c = sampler.sample(z_T, cond, noise=other).latents
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4  # same z_T, different inter-step noise: a different sample
    with pytest.raises(ValueError, match="seeded_start"):
        sampler.sample(z_T, cond)


def _grads(sd, checkpointing):
    sampler = LCMSampler(sd, checkpointing=checkpointing)
    z_T, noise = sampler.seeded_start(5)
    z_T.requires_grad_(True)
    cond = sd.encode_prompt(PROMPT)
    dc = torch.zeros((sd.num_steps, *cond.shape), requires_grad=True)
    out = sampler.sample(z_T, cond + dc, None, keep_last=2, noise=noise)
    images = [sampler.decode(x) for x in out.x0_predictions] + [sampler.decode(out.latents)]
    target = torch.linspace(0, 1, images[0].numel()).reshape(images[0].shape)
    sum((w + 1) * ((img - target) ** 2).mean() for w, img in enumerate(images)).backward()
    return z_T.grad, dc.grad


def test_checkpointed_gradients_equal_plain_backprop(tiny_lcm_sd):
    plain, ckpt = _grads(tiny_lcm_sd, False), _grads(tiny_lcm_sd, True)
    for a, b in zip(plain, ckpt):
        assert a.abs().sum() > 0
        assert ((a - b).norm() / a.norm()).item() <= 1e-5
    assert all(plain[1][i].abs().sum() > 0 for i in range(tiny_lcm_sd.num_steps))


# --- A guidance-distilled LCM (UNet with time_cond_proj_dim, e.g. LCM_Dreamshaper_v7), not a LoRA ---------------

@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny distilled-LCM pipeline saved by diffusers' LatentConsistencyModelPipeline, then loaded twice from the
    folder: by that pipeline (the reference) and by our generator loader (``generator.pretrained=<folder>``)."""
    from diffusers import LatentConsistencyModelPipeline
    from omegaconf import OmegaConf

    from digin_cli.generation.models import load_generator

    parts = tiny_pipeline(0, time_cond_proj_dim=32)
    folder = tmp_path_factory.mktemp("tiny-lcm-distilled")
    LatentConsistencyModelPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=LCMScheduler.from_config(parts.scheduler.config),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).save_pretrained(folder)
    reference = LatentConsistencyModelPipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    cfg = OmegaConf.create({"source": "pretrained", "pretrained": str(folder), "sampler": "lcm", "num_steps": 4,
                            "guidance_scale": 8.0, "resolution": 64})
    return reference, load_generator(cfg)


def _distilled_image(sd, num_steps, guidance, seed=7):
    sd = _with_settings(sd, num_steps, guidance)
    sampler = LCMSampler(sd)
    z_T, noise = sampler.seeded_start(seed)
    with torch.no_grad():
        return sampler.decode(sampler.sample(z_T, sd.encode_prompt(PROMPT), None, noise=noise).latents)


@pytest.mark.parametrize("num_steps,guidance", [(4, 8.0), (1, 8.0), (4, 1.0), (2, 3.0)])
def test_distilled_lcm_equals_diffusers_latent_consistency_pipeline(distilled, num_steps, guidance):
    reference_pipe, sd = distilled
    assert sd.distilled_lcm and not LCMSampler(sd).guided  # no unconditional branch, at any scale
    with torch.no_grad():
        reference = reference_pipe(PROMPT, num_inference_steps=num_steps, guidance_scale=guidance, height=64,
                                   width=64, output_type="pt", generator=torch.Generator("cpu").manual_seed(7)).images
    assert (_distilled_image(sd, num_steps, guidance) - reference).abs().max().item() <= 1e-5
    assert reference.std() > 1e-3


def test_distilled_lcm_guidance_enters_through_the_embedding(distilled):
    # The w-embedding is live: a different scale is a different image (so the match above is not vacuous), and
    # at scale 1 the embedding of w = 0 (cos terms = 1) still differs from passing none.
    _, sd = distilled
    assert (_distilled_image(sd, 4, 8.0) - _distilled_image(sd, 4, 1.0)).abs().max() > 1e-3
    sampler = LCMSampler(_with_settings(sd, 4, 1.0))
    emb = sampler.guidance_condition(2)
    assert emb.shape == (2, 32) and torch.equal(emb[:, 16:], torch.ones(2, 16))


def test_distilled_lcm_checkpointed_gradients_equal_plain_backprop(distilled):
    _, sd = distilled
    plain, ckpt = _grads(sd, False), _grads(sd, True)
    for a, b in zip(plain, ckpt):
        assert a.abs().sum() > 0
        assert ((a - b).norm() / a.norm()).item() <= 1e-5


def test_ddim_refuses_a_distilled_lcm_in_one_line(distilled):
    from digin_cli.errors import DiginError
    from digin_cli.generation.sampler import DDIMSampler

    with pytest.raises(DiginError, match="distilled latent consistency model .* use generator.sampler=lcm") as info:
        DDIMSampler(distilled[1])
    assert "\n" not in str(info.value)


def test_lcm_dreamshaper_config_is_a_distilled_lcm_and_fails_offline_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from digin_cli.errors import DiginError
    from digin_cli.generation.models import load_generator

    cfg = preset("generator", "lcm_dreamshaper")
    assert (cfg.pretrained, cfg.sampler, cfg.lora, cfg.guidance_scale) == ("SimianLuo/LCM_Dreamshaper_v7", "lcm",
                                                                           None, 8.0)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(DiginError, match="SimianLuo/LCM_Dreamshaper_v7.*HF_HUB_OFFLINE") as info:
        load_generator(cfg)
    assert "\n" not in str(info.value)
