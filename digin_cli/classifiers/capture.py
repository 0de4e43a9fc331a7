"""Features of a network we did not write: read with forward hooks, and its head checked to be linear by measuring.

A user's module or a Hugging Face model has its own ``forward``; copying it to stop at the penultimate layer would
silently diverge from the real model. Instead a hook on one submodule records its input or output during the
model's own forward pass, and :func:`linear_head` verifies on a probe batch that the logits really are
``features @ W.T + b`` for the last ``nn.Linear`` before a neuron task relies on that.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FeatureTap:
    """Run ``forward`` while recording the (flattened) input or output of ``module``.

    ``reads_input=True`` takes what the module receives (the penultimate features when the module is the final
    ``nn.Linear``); otherwise what it returns. The hook lives only for one call, so nothing stays attached to the
    model between calls.
    """

    def __init__(self, module: nn.Module, reads_input: bool) -> None:
        self.module, self.reads_input = module, reads_input

    def __call__(self, forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(forward(), [features of each call of the module])``; callers check there is exactly one."""
        seen: list = []
        if self.reads_input:
            handle = self.module.register_forward_pre_hook(lambda m, args: seen.append(args[0] if args else None))
        else:
            handle = self.module.register_forward_hook(lambda m, args, out: seen.append(out))
        try:
            out = forward()
        finally:
            handle.remove()
        return out, [f.flatten(1) if isinstance(f, torch.Tensor) else f for f in seen]


def last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` registered in ``module`` (for classifiers, the head, if the head is linear)."""
    found = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


def linear_head(module: nn.Module, features: torch.Tensor, logits: torch.Tensor) -> str | None:
    """The name (in ``module``) of its last ``nn.Linear`` if ``logits == features @ W.T + b`` holds on this probe
    batch, else None.

    Measured rather than assumed: a model may rescale, mix or post-process after its last linear layer. A name, not
    the module: holding a submodule as an attribute of another module would register it twice.
    """
    linear = last_linear(module)
    if linear is None or features.ndim != 2 or tuple(linear.weight.shape) != (logits.shape[-1], features.shape[1]):
        return None
    with torch.no_grad():
        mapped = nn.functional.linear(features.to(linear.weight.dtype), linear.weight, linear.bias)
    scale = logits.abs().max().clamp_min(1.0)
    if not torch.allclose(mapped, logits.to(mapped.dtype), rtol=1e-4, atol=1e-5 * float(scale)):
        return None
    return next(name for name, m in module.named_modules() if m is linear)


def probe(forward: Callable[[], object], what: str, size: tuple[int, int]) -> object:
    """``forward()`` without gradients; a failure there is a user error (most often a wrong input size)."""
    from digin_cli.errors import DiginError

    try:
        with torch.no_grad():
            return forward()
    except (RuntimeError, ValueError, TypeError) as e:
        first = " ".join(str(e).split())[:300]
        raise DiginError(f"{what} fails on a probe batch of {size[0]}x{size[1]} images ({type(e).__name__}: "
                         f"{first}) — check classifier.input_size (and the model's arguments)") from None


def probe_batch(input_size: tuple[int, int], n: int = 2) -> torch.Tensor:
    """A fixed random batch in model input space, drawn from a private generator (the run's RNG stays untouched)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, *input_size, generator=g)
