"""Generator loading: saved diffusers folders load through from_pretrained; shipped SD 1.5 configs are the real ones."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from digin_cli.errors import DiginError
from digin_cli.generation.models import _sd15_config, load_generator, tiny_lora, tiny_pipeline
from digin_cli.generation.sampler import DDIMSampler

from tests.conftest import tiny_generator_cfg


def test_a_saved_pipeline_folder_loads_and_samples_identically(tmp_path, tiny_sd):
    tiny_pipeline(0).save_pretrained(tmp_path / "sd")
    loaded = load_generator(tiny_generator_cfg(source="pretrained", pretrained=str(tmp_path / "sd")))
    images = []
    for sd in (tiny_sd, loaded):
        sampler = DDIMSampler(sd)
        with torch.no_grad():
            out = sampler.sample(sd.initial_latent(2), sd.encode_prompt("a koala"), sd.null_embedding()).latents
            images.append(sampler.decode(out))
    assert torch.equal(images[0], images[1])


def test_tiny_generator_is_identical_across_builds():
    a, b = tiny_pipeline(0), tiny_pipeline(0)
    for (name, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(next(tiny_pipeline(1).unet.parameters()), next(a.unet.parameters()))


def test_broken_folder_and_empty_pretrained_are_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiginError, match="generator.pretrained="):
        load_generator(tiny_generator_cfg(source="pretrained", pretrained=str(tmp_path / "empty")))
    with pytest.raises(DiginError, match="generator.pretrained"):
        load_generator(tiny_generator_cfg(source="pretrained", pretrained=None))
    with pytest.raises(DiginError, match="positive"):
        load_generator(tiny_generator_cfg(num_steps=0))


def test_shipped_sd15_unet_config_is_the_real_architecture():
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_sd15_config("unet"))
    # Stable Diffusion 1.5's UNet has 859,520,964 parameters.
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964


def test_lora_missing_offline_or_broken_is_one_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiginError, match=r"generator\.lora=.*") as err:
        load_generator(tiny_generator_cfg(lora="latent-consistency/lcm-lora-sdv1-5"))
    assert "HF_HUB_OFFLINE" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiginError, match="generator.lora="):
        load_generator(tiny_generator_cfg(lora=str(tmp_path / "empty")))
    with pytest.raises(DiginError, match="source=tiny"):
        load_generator(tiny_generator_cfg(source="random_sd15", lora="tiny"))
    with pytest.raises(DiginError, match="ddim, lcm"):
        load_generator(tiny_generator_cfg(sampler="euler"))


def test_tiny_lora_is_written_once_and_reloads_identically(tmp_path):
    folder = tiny_lora(tmp_path, 0)
    stamp = (folder / "pytorch_lora_weights.safetensors").stat().st_mtime_ns
    assert tiny_lora(tmp_path, 0) == folder
    assert (folder / "pytorch_lora_weights.safetensors").stat().st_mtime_ns == stamp
    a = load_generator(tiny_generator_cfg(lora="tiny"), cache_dir=tmp_path)
    b = load_generator(tiny_generator_cfg(lora=str(folder)))
    for p, q in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(p, q)


def test_a_lora_hub_id_in_the_local_cache_loads_offline(tmp_path, monkeypatch):
    # The lcm_lora path on an offline GPU node: the hub id resolves from the HF cache without network.
    import shutil

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hub" / "models--someone--tiny-lora" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    shutil.copy(tiny_lora(tmp_path / "cache", 0) / "pytorch_lora_weights.safetensors", snapshot)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = load_generator(tiny_generator_cfg(lora="someone/tiny-lora"))
    local = load_generator(tiny_generator_cfg(lora="tiny"), cache_dir=tmp_path / "cache")
    for p, q in zip(hub.unet.parameters(), local.unet.parameters()):
        assert torch.equal(p, q)
