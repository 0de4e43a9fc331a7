"""Load the Stable Diffusion components of a run.

Three sources, one object: a pretrained SD 1.x pipeline through diffusers ``from_pretrained`` (hub id or any saved
diffusers folder, honouring the HF cache and offline mode), the real SD 1.5 architecture with random weights (for
benchmarks without weights), and a tiny random model built from configs (for tests and the demo). All three give a
:class:`StableDiffusion` that wraps a real ``StableDiffusionPipeline`` with a DDIM scheduler, so the reference
pipeline and our differentiable sampler always share components.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel

from digin_cli.errors import DiginError, hub_loading
from digin_cli.generation.tokenizer import clip_tokenizer

SOURCES = ("pretrained", "tiny", "random_sd15")
SAMPLERS = ("ddim", "lcm")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


class StableDiffusion:
    """Frozen SD components plus the sampling settings (steps, guidance, resolution) of one run."""

    def __init__(self, pipe: StableDiffusionPipeline, num_steps: int, guidance_scale: float, resolution: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if int(num_steps) <= 0:
            raise DiginError(f"generator.num_steps must be a positive integer, got {num_steps}")
        if int(resolution) <= 0 or int(resolution) % 8:
            raise DiginError(f"generator.resolution must be a positive multiple of 8, got {resolution}")
        # DDIM with eta=0 is the deterministic sampler DiG-IN differentiates through (paper Eq. 1).
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
            module.eval()
        # Cast only when needed: diffusers warns on a no-op dtype cast of modules it keeps in float32.
        self.pipe = pipe.to(device=device) if pipe.dtype == dtype else pipe.to(device=device, dtype=dtype)
        self.num_steps = int(num_steps)
        self.guidance_scale = float(guidance_scale)
        self.resolution = int(resolution)
        self.device = torch.device(device)
        self.dtype = dtype

    unet = property(lambda self: self.pipe.unet)
    vae = property(lambda self: self.pipe.vae)
    text_encoder = property(lambda self: self.pipe.text_encoder)
    tokenizer = property(lambda self: self.pipe.tokenizer)
    scheduler = property(lambda self: self.pipe.scheduler)

    @property
    def distilled_lcm(self) -> bool:
        """A guidance-distilled latent consistency model (e.g. LCM_Dreamshaper_v7): its UNet embeds the guidance
        scale (``time_cond_proj_dim``) instead of running classifier-free guidance (Luo et al. 2023, Sec. 4.2)."""
        return self.unet.config.get("time_cond_proj_dim") is not None

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        side = self.resolution // self.pipe.vae_scale_factor
        return (1, self.unet.config.in_channels, side, side)

    def initial_latent(self, seed: int) -> torch.Tensor:
        """z_T for ``seed`` exactly as a diffusers pipeline draws it from a CPU generator (float32)."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        z = randn_tensor(self.latent_shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        return (z * self.scheduler.init_noise_sigma).to(self.device)

    @torch.no_grad()
    def encode_prompt(self, prompts: str | list[str]) -> torch.Tensor:
        """CLIP text embeddings ``(B, 77, D)`` in float32, through the pipeline's own ``encode_prompt``."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, do_classifier_free_guidance=False)
        return embeds.float()

    def null_embedding(self) -> torch.Tensor:
        """The null-text embedding of the empty prompt, what SD uses for the unconditional branch."""
        return self.encode_prompt([""])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to images in [0, 1] (float32); differentiable when grad is enabled."""
        scaled = latents.to(self.dtype) / self.vae.config.scaling_factor
        image = self.vae.decode(scaled, return_dict=False)[0].float()
        return (image / 2 + 0.5).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """VAE-encode images in [0, 1] to scaled latents (posterior mean, as null-text inversion does)."""
        posterior = self.vae.encode((images * 2 - 1).to(self.dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor


def _pipeline(unet, vae, text_encoder, scheduler, cache_dir: str | None = None) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(cache_dir), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _sd_scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def _tiny_unet(seed: int, time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, time_cond_proj_dim=time_cond_proj_dim)


def tiny_pipeline(seed: int = 0, cache_dir: str | None = None, time_cond_proj_dim: int | None = None
                  ) -> StableDiffusionPipeline:
    """A tiny random SD 1.x pipeline (64 px images, 8x8 latents), identical on every machine for a given seed.

    Same classes and data path as SD 1.5 (cross-attention UNet, 8x-downsampling VAE, CLIP text encoder with the real
    49408-token vocabulary), only narrow; its images are noise-like and show the machinery, not the science.
    ``time_cond_proj_dim`` gives the UNet a guidance-embedding input, the architecture of a distilled LCM.
    """
    with torch.random.fork_rng(devices=[]):
        unet = _tiny_unet(seed, time_cond_proj_dim)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(8, 16, 16, 16), sample_size=64,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    return _pipeline(unet, vae, text_encoder, _sd_scheduler(), cache_dir)


def _sd15_config(component: str) -> dict:
    text = resources.files("digin_cli.generation").joinpath("configs", "sd15", f"{component}.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def random_sd15_pipeline(seed: int = 0, cache_dir: str | None = None) -> StableDiffusionPipeline:
    """The real SD 1.5 architecture (configs shipped in the package) with random weights, for benchmarks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(_sd15_config("unet"))
        vae = AutoencoderKL.from_config(_sd15_config("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_sd15_config("text_encoder")))
    return _pipeline(unet, vae, text_encoder, DDIMScheduler.from_config(_sd15_config("scheduler")), cache_dir)


def pretrained_pipeline(pretrained: str, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """Load any SD 1.x diffusers pipeline (hub id or local folder) through ``from_pretrained``."""
    with hub_loading(pretrained, what="generator weights", local_what="a Stable Diffusion pipeline",
                     fix="or set generator.pretrained=/path/to/a/local/diffusers/folder",
                     local_fix="point generator.pretrained= at a folder written by "
                               "StableDiffusionPipeline.save_pretrained"):
        return StableDiffusionPipeline.from_pretrained(pretrained, torch_dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)


def tiny_lora(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A seeded random LoRA for the tiny UNet, written once with ``save_lora_weights``; returns its folder.

    Stands in for LCM-LoRA in tests: the same peft layers (``to_q/to_k/to_v/to_out.0``) and the same file format,
    so it goes through exactly the ``load_lora_weights`` + ``fuse_lora`` path a downloaded LoRA takes. Both LoRA
    matrices are random (peft's ``init_lora_weights=False``): the default zero B would make the LoRA a no-op.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = Path(os.path.expanduser(str(cache_dir))) / "lora" / f"tiny-seed{int(seed)}"
    if (folder / "pytorch_lora_weights.safetensors").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        unet = _tiny_unet(int(seed))
        torch.manual_seed(int(seed) + 100)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False))
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: concurrent jobs never read a half-written LoRA.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race; its folder is complete
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def apply_lora(pipe: StableDiffusionPipeline, lora: str) -> None:
    """``load_lora_weights(lora)`` then ``fuse_lora()``: the LoRA is merged into the UNet weights, so sampling costs
    exactly what the base model costs; the peft layers are unloaded afterwards (the fused weights stay)."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    # A UNet-only LoRA (LCM-LoRA, ours) makes diffusers warn that the text encoder got no LoRA keys: expected.
    diffusers_logging.set_verbosity_error()
    from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

    path = os.path.expanduser(lora)
    # A hub id gets diffusers' standard file name: in offline mode diffusers will not search a cached repo for it.
    kwargs = {} if os.path.exists(path) else {"weight_name": LORA_WEIGHT_NAME_SAFE}
    try:
        with hub_loading(lora, what="LoRA weights", fix="or set generator.lora=/path/to/a/local/lora/folder",
                         local_fix="point generator.lora= at a folder or .safetensors file written by "
                                   "save_lora_weights"):
            pipe.load_lora_weights(path if os.path.exists(path) else lora, **kwargs)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    pipe.fuse_lora()
    pipe.unload_lora_weights()


def load_generator(cfg, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   cache_dir: str | os.PathLike | None = None) -> StableDiffusion:
    """Build the :class:`StableDiffusion` described by a ``generator`` config node.

    ``cfg.lora`` (optional) is a LoRA hub id, local folder or ``tiny`` (:func:`tiny_lora`, written under
    ``cache_dir``), fused into the UNet after the pipeline is built (LCM-LoRA: DiffExplainer Sec. 3.2). ``cache_dir``
    (``paths.cache_dir``) also holds the tokenizer files of the tiny / random generators; pretrained ones bring their
    own tokenizer from the Hugging Face cache.
    """
    source = cfg.get("source", "pretrained")
    if source == "tiny":
        pipe = tiny_pipeline(int(cfg.get("seed", 0)), cache_dir)
    elif source == "random_sd15":
        pipe = random_sd15_pipeline(int(cfg.get("seed", 0)), cache_dir)
    elif source == "pretrained":
        if not cfg.get("pretrained"):
            raise DiginError("generator.pretrained is empty — set it to a hub id or a local diffusers folder")
        pipe = pretrained_pipeline(str(cfg.pretrained), dtype)
    else:
        raise DiginError(f"unknown generator.source '{source}' — use one of: {', '.join(SOURCES)}")
    if cfg.get("sampler", "ddim") not in SAMPLERS:
        raise DiginError(f"unknown generator.sampler '{cfg.sampler}' — use one of: {', '.join(SAMPLERS)}")
    lora = cfg.get("lora")
    if str(lora) == "tiny" and source != "tiny":
        raise DiginError("generator.lora=tiny is a random LoRA for the tiny UNet only — use it with "
                         "generator.source=tiny, or name a real LoRA (hub id or folder)")
    if lora:
        cache = cache_dir or os.environ.get("DIGIN_CACHE", Path.home() / ".cache" / "digin")
        apply_lora(pipe, str(tiny_lora(cache, int(cfg.get("seed", 0))) if str(lora) == "tiny" else lora))
    return StableDiffusion(pipe, cfg.num_steps, cfg.guidance_scale, cfg.resolution, device=device, dtype=dtype)
