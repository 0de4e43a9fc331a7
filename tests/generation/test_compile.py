"""``optimizer.compile``: a torch.compile'd UNet with the prompt-to-prompt processors and per-step checkpointing.

The backend is ``aot_eager``: the same Dynamo capture and AOTAutograd joint graph as inductor, without its code
generation (minutes on a CPU; inductor's numbers are in docs/benchmarks.md).
"""

import pytest
import torch

from digin_cli.generation.attention import AttentionController, attention_control
from digin_cli.generation.sampler import DDIMSampler, SamplerHooks

SOURCE, TARGET = "a photograph of a red fox", "a photograph of a tabby cat"


@pytest.fixture
def dynamo():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def _edit(sampler, sd, z_T, cond, null):
    """A store pass (no grad), then an injection pass inside a window with gradients through every step."""
    controller = AttentionController.for_sampler(sampler, mode="store")
    hooks = SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs)
    with attention_control(sd.unet, controller), torch.no_grad():
        stored = sampler.sample(z_T, sd.encode_prompt(SOURCE), null, hooks=hooks).latents
    controller.mode, controller.window = "inject", (0.0, 0.5)
    z, c = z_T.clone().requires_grad_(), cond.clone().requires_grad_()
    with attention_control(sd.unet, controller):  # checkpointed steps are recomputed in backward: inside
        edited = sampler.sample(z, c, null, hooks=hooks).latents
        edited.square().mean().backward()
    return stored, edited.detach(), z.grad, c.grad


def test_compiled_unet_with_injection_and_checkpointing_matches_eager(tiny_sd, dynamo):
    z_T, cond, null = tiny_sd.initial_latent(0), tiny_sd.encode_prompt(TARGET), tiny_sd.null_embedding()
    eager = _edit(DDIMSampler(tiny_sd, checkpointing=True), tiny_sd, z_T, cond, null)
    compiled = _edit(DDIMSampler(tiny_sd, checkpointing=True, compile="aot_eager"), tiny_sd, z_T, cond, null)
    for name, a, b in zip(("stored", "edited", "grad z_T", "grad cond"), eager, compiled):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), name
    assert compiled[2].abs().sum() > 0 and compiled[3].abs().sum() > 0
    # One graph per attention state (store; inject inside the window; outside it), not one per step: the step index
    # never reaches the UNet, and the processors' bookkeeping traces without a graph break.
    assert tiny_sd.num_steps >= 4
    assert sum(dynamo["graph_break"].values()) == 0
    assert dynamo["stats"]["unique_graphs"] == 3
