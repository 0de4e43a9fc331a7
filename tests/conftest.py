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
