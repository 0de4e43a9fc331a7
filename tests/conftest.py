"""Session-wide test set-up: offline, pinned threads, seeded, tiny components built once."""

import os
import tempfile

# Set before any library import: no test may reach a model hub, and W&B stays local.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("DIGIN_CACHE", tempfile.mkdtemp(prefix="digin-test-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

torch.set_num_threads(int(os.environ.get("DIGIN_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_generator_cfg(**overrides):
    cfg = OmegaConf.create({"name": "tiny", "source": "tiny", "pretrained": None, "seed": 0, "num_steps": 4,
                            "guidance_scale": 3.0, "resolution": 64})
    return OmegaConf.merge(cfg, overrides)


@pytest.fixture(scope="session")
def tiny_sd():
    from digin_cli.generation.models import load_generator

    return load_generator(tiny_generator_cfg())


@pytest.fixture(scope="session")
def tiny_lcm_sd():
    """The tiny generator with its seeded random LoRA fused (the ``generator=tiny_lcm`` config), 4 LCM steps."""
    from digin_cli.generation.models import load_generator

    return load_generator(tiny_generator_cfg(sampler="lcm", lora="tiny", guidance_scale=1.0))


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory):
    """A seeded tiny ViT -> GPT-2 VisionEncoderDecoderModel with a ViT image processor and SD's CLIP tokenizer,
    written with save_pretrained: it loads through exactly the path a hub captioner takes."""
    from transformers import (
        GPT2Config,
        ViTConfig,
        ViTImageProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )

    from digin_cli.generation.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    enc = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    dec = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=49408, n_positions=128, add_cross_attention=True,
                     is_decoder=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = tok.bos_token_id
    cfg.pad_token_id = tok.pad_token_id
    cfg.eos_token_id = tok.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VisionEncoderDecoderModel(config=cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-captioner")
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def hydra_dir():
    """Hydra initialised on the project's conf/ (digin's groups registered), for tests that compose configs."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from digin_cli.configs import CONF_DIR, register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="test"):
        yield
    GlobalHydra.instance().clear()
