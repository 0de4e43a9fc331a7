"""The memory plan of one optimisation step: which denoising steps (and whether the batched decode) keep their
activations for backward instead of recomputing them.

``checkpointing: true`` recomputes every denoising step in backward, ``false`` none, ``"auto"`` measures once (first
iterate, saved-tensor hooks) the activation bytes of one step and leaves as many of the last steps un-checkpointed
as fit ``memory_budget_gb`` (on CUDA by default 85 % of the free memory; on CPU without a budget: all checkpointed);
when all of them fit, the batched decode too if the rest of the budget holds its activations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from digin_cli.generation.sampler import DDIMSampler, SamplerHooks, per_step


def saved_bytes(forward: Callable[[], object], module: torch.nn.Module) -> int:
    """Bytes autograd saves for backward over ``forward()`` (unique storages; ``module``'s frozen weights, which
    exist anyway, excluded), counted with saved-tensor hooks on a throw-away forward."""
    weights = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())


def step_activation_bytes(sampler: DDIMSampler, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                          hooks: SamplerHooks | None = None, i: int = 0, noise: object | None = None) -> int:
    """Bytes autograd saves for backward over one un-checkpointed denoising step ``i``."""
    inputs = [t.detach().requires_grad_() if t is not None else None
              for t in (z, per_step(cond, i), per_step(uncond, i) if uncond is not None else None)]
    return saved_bytes(lambda: sampler.step(*inputs[:1], i, *inputs[1:], hooks, noise), sampler.sd.unet)


def decode_activation_bytes(sampler: DDIMSampler, latents: torch.Tensor) -> int:
    """Bytes autograd saves for backward over one un-checkpointed, batched VAE decode of ``latents``."""
    leaf = torch.zeros_like(latents).requires_grad_()
    return saved_bytes(lambda: sampler.decode(leaf, checkpointing=False), sampler.sd.vae)


class MemoryPlan:
    """What one training step keeps for backward, from ``checkpointing`` (True / False / "auto") and a budget.

    Planned once, on the first training iterate (:meth:`plan`); until then, and for evaluation-only renders, "auto"
    checkpoints every step (nothing is stored without grad anyway).
    """

    def __init__(self, checkpointing: bool | str = True, budget_gb: float | None = None):
        if checkpointing not in (True, False, "auto"):
            raise ValueError("checkpointing must be True, False or 'auto'")
        self.mode, self.budget_gb = checkpointing, budget_gb
        self.step_bytes: int | None = None
        """Activation bytes of one denoising step, measured on the first iterate with checkpointing "auto"."""
        self.plain_steps: int | None = None
        """How many of the last steps run un-checkpointed (None until planned)."""
        self.decode_bytes: int | None = None
        """Activation bytes of the batched decode of the k loss latents, measured when "auto" fits every step."""
        self.plain_decode = False
        """Whether the decode runs un-checkpointed: "auto" with room for every step and the decoder too."""

    def plan(self, sampler: DDIMSampler, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
             hooks: SamplerHooks | None = None, noise: object | None = None, loss_steps: int = 1) -> int:
        """Fix (and return) how many of the last steps run un-checkpointed; "auto" measures one step (once).

        The last steps are the ones left plain: backward meets them first and frees their activations before any
        checkpointed step is recomputed, so the peak is max(n, 1) steps' activations rather than n + 1. When every
        step fits and the rest of the budget holds the decoder's activations for the ``loss_steps`` loss latents
        too, the decode is left plain as well (``plain_decode``): its recomputation is the fixed cost of a step, the
        one that dominates at small T.
        """
        T = sampler.num_steps
        self.plain_decode = False
        if self.mode != "auto":
            self.plain_steps = 0 if self.mode else T
            return self.plain_steps
        if self.budget_gb is None:
            if z.device.type != "cuda":
                self.plain_steps = 0  # on CPU "auto" means checkpoint everything unless a budget is given
                return 0
            budget_bytes = 0.85 * torch.cuda.mem_get_info(z.device)[0]
        else:
            budget_bytes = float(self.budget_gb) * 2**30
        if self.step_bytes is None:
            self.step_bytes = step_activation_bytes(sampler, z, cond, uncond, hooks, noise=noise)
        plain = min(T, int(budget_bytes // max(self.step_bytes, 1)))
        if plain == T:
            if self.decode_bytes is None:
                k = min(loss_steps, T)
                latents = z.detach().new_zeros((k * z.shape[0], *z.shape[1:]))
                self.decode_bytes = decode_activation_bytes(sampler, latents)
            self.plain_decode = budget_bytes - T * self.step_bytes >= self.decode_bytes
        self.plain_steps = plain
        return plain

    def checkpoint_step(self, num_steps: int) -> Callable[[int], bool]:
        """Whether denoising step i is checkpointed: all but the last ``plain_steps`` (all of them unplanned)."""
        plain = num_steps if self.mode is False else (self.plain_steps or 0)
        return lambda i: i < num_steps - plain

    @property
    def checkpoint_decode(self) -> bool:
        return self.mode is not False and not self.plain_decode
