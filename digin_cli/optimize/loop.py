"""The one DiG-IN optimisation loop (paper Eq. 2, Algorithm 1), shared by every task.

Optimises the sampler inputs — initial latent z_T, per-step conditioning deltas ΔC_t and per-step null-text deltas
Δ∅_t — with Adam parameter groups, by backpropagating a classifier objective through the whole DDIM chain.
Choices that follow the authors' code: z_T is projected back to its initial L2 norm after every step; the training
loss is a linearly weighted sum over the images of the last k steps (x0-predictions, the final one being z_0 itself,
the image we output), each seen through random cutouts; every iterate's plain image is scored without augmentation
and the best one is returned, iterate 0 being the unoptimised SD image; a non-finite loss ends the run for that item
with the error recorded and the best iterate so far kept.

One optimisation step, lean (all exact: the gradients equal a single ``backward()`` of the whole loss):

1. render with grad: the sampler's chain (per-step checkpointing as the :class:`MemoryPlan` says), then the k loss
   latents decoded in one batched, checkpointed VAE call;
2. the k images (and latents) become detached leaves; the objective's training loss runs on them a chunk of cutouts
   at a time (``chunk`` views, each chunk scaled by its share of the views; views drawn once per image before
   chunking), with a ``backward()`` per chunk, so only one chunk's classifier activations are ever alive;
3. one ``torch.autograd.backward`` from the images and latents, with the leaves' gradients, plus the objective's
   whole-image terms (Eq. 4), through the decoder and the sampler.

What is optimised is a variables object (:mod:`digin_cli.optimize.variables`); ``DiginOptimizer.run`` is the
shorthand for DiG-IN's :class:`SamplerDeltas`. With a new z per iterate (prompt variables) the plain losses of
iterates are not comparable, so ``select: last`` returns the final iterate (the paper's t*); ``select: best`` is
DiG-IN's best plain loss. ``keep_images_every`` keeps every n-th iterate's image on CPU (plus the first, last and
selected ones), a per-iterate ``callback`` sees each :class:`Iterate` with its training loss (W&B loss curves), and
a ``progress`` callback wraps the iterates (the CLI's progress bar).

Checkpointing is the loop's: ``settings.checkpointing`` decides, for every step it renders with grad, which sampler
steps and whether the decode are recomputed in backward (:mod:`digin_cli.optimize.memory`); the sampler's own
``checkpointing`` attribute only serves callers that run it outside the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from digin_cli.generation.sampler import DDIMSampler, SamplerHooks
from digin_cli.objectives import Objective
from digin_cli.optimize.memory import MemoryPlan
from digin_cli.optimize.settings import OptimSettings
from digin_cli.optimize.variables import SamplerDeltas, Variables

LossFunction = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""``loss_fn(images, augment, latents)`` -> (loss, metrics): an :class:`~digin_cli.objectives.Objective` (chunked in
the two-stage backward) or any plain callable of that shape."""

Progress = Callable[[Iterable[int], str], Iterable[int]]
"""``progress(iterates, description)`` yields the iterates (e.g. :func:`digin_cli.io.progress.track`'s bar)."""


@dataclass
class Iterate:
    index: int
    image: torch.Tensor | None
    """The plain (non-augmented) final image of this iterate, (1,3,H,W) on CPU; None when not kept."""
    loss: float
    metrics: dict[str, float]
    train_loss: float | None = None
    """The (augmented, weighted) training loss of this iterate; None for the last, evaluation-only one."""


@dataclass
class OptimResult:
    iterates: list[Iterate]
    best_index: int
    error: str | None = None
    seconds: float = 0.0
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    """The selected iterate's variables (detached; :meth:`SamplerDeltas.snapshot`, :meth:`PromptVariables.snapshot`),
    to re-render or continue from."""

    @property
    def best(self) -> Iterate:
        return self.iterates[self.best_index]

    @property
    def initial(self) -> Iterate:
        return self.iterates[0]


def linear_weights(k: int) -> list[float]:
    """The authors' 'linear' schedule over the last k steps: 1/6, 2/6, 3/6 for k = 3."""
    total = k * (k + 1) / 2
    return [(j + 1) / total for j in range(k)]


class DiginOptimizer:
    """Optimise sampler inputs so that generated images minimise an objective.

    Args:
        sampler: the differentiable DDIM sampler.
        settings: learning rates, steps, which variables to optimise and the checkpointing plan.
        hooks: per-step sampler hooks (prompt-to-prompt injection, mask blending), fixed during optimisation.
        callback: sees every :class:`Iterate` once it is done.
        progress: wraps the iterates' range with a description (a progress bar); None shows nothing.
    """

    def __init__(self, sampler: DDIMSampler, settings: OptimSettings, hooks: SamplerHooks | None = None,
                 callback: Callable[[Iterate], None] | None = None, progress: Progress | None = None):
        self.sampler, self.settings, self.hooks, self.callback = sampler, settings, hooks, callback
        self.progress = progress
        self.memory = MemoryPlan(settings.checkpointing, settings.memory_budget_gb)
        """Which steps (and whether the decode) keep their activations; planned on the first training iterate."""

    def plan_checkpointing(self, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                           noise: object | None = None) -> int:
        """Plan the memory of a training step on these inputs (:meth:`MemoryPlan.plan`); returns the plain steps."""
        return self.memory.plan(self.sampler, z, cond, uncond, self.hooks, noise, self.settings.loss_steps)

    def render(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, k: int | None = None,
               noise: object | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Latents and images in [0, 1] of the last k steps; the last pair is z_0 and its image, the iterate's.

        The k latents are decoded in one batched VAE call (checkpointed unless checkpointing is off, or "auto" found
        room for its activations).
        """
        T = self.sampler.num_steps
        k = min(self.settings.loss_steps, T) if k is None else k
        out = self.sampler.sample(z_T, cond, uncond, keep_last=k, hooks=self.hooks,
                                  checkpoint_step=self.memory.checkpoint_step(T), noise=noise)
        latents = out.x0_predictions[:-1] + [out.latents]
        batch = z_T.shape[0]
        images = self.sampler.decode(torch.cat(latents), checkpointing=self.memory.checkpoint_decode)
        images = images.split(batch)
        return latents, list(images)

    def training_backward(self, objective: LossFunction, images: list[torch.Tensor], latents: list[torch.Tensor],
                          weights: list[float]) -> torch.Tensor:
        """Backpropagate Σ_j w_j L(x_j, z_j) to the sampler inputs; returns the loss value (detached).

        Two-stage (default, see the module docstring) or one ``backward()`` of the whole loss (``two_stage=False``).
        A non-finite loss is returned before anything reaches the sampler inputs.
        """
        if not self.settings.two_stage:
            loss = sum(w * objective(img, True, lat)[0] for w, img, lat in zip(weights, images, latents))
            if torch.isfinite(loss):
                loss.backward()
            return loss.detach()
        image_leaves = [x.detach().requires_grad_() for x in images]
        latent_leaves = [z.detach().requires_grad_() for z in latents]
        total = images[0].new_zeros(())
        extra = []
        chunk = self.settings.chunk
        for w, x, z, x_graph, z_graph in zip(weights, image_leaves, latent_leaves, images, latents):
            if isinstance(objective, Objective):
                draws = objective.draw(x)  # every view fixed before chunking: chunks never change what a view sees
                for start in range(0, objective.num_views, chunk):
                    part = w * objective.chunk_loss(x, draws, slice(start, start + chunk))
                    part.backward()
                    total = total + part.detach()
                term = objective.image_loss(x_graph, z_graph)  # cheap whole-image terms: straight in the last stage
                if term is not None:
                    extra.append(w * term)
            else:  # a plain callable: the whole loss on the leaves, one piece
                part = w * objective(x, True, z)[0]
                part.backward()
                total = total + part.detach()
        extra = sum(extra) if extra else None
        if extra is not None:
            total = total + extra.detach()
        if not torch.isfinite(total):
            return total
        tensors = [t for t, leaf in zip([*images, *latents], [*image_leaves, *latent_leaves]) if leaf.grad is not None]
        grads = [leaf.grad for leaf in [*image_leaves, *latent_leaves] if leaf.grad is not None]
        if extra is not None:
            tensors.append(extra)
            grads.append(None)
        if tensors:
            torch.autograd.backward(tensors, grads)
        return total

    def run(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, objective: LossFunction,
            description: str = "optimising", noise: object | None = None) -> OptimResult:
        """DiG-IN's optimisation of (z_T, ΔC_t, Δ∅_t): :meth:`optimize` over :class:`SamplerDeltas`."""
        deltas = SamplerDeltas(z_T, cond, uncond, self.settings, self.sampler.num_steps, noise)
        return self.optimize(deltas, objective, description)

    def optimize(self, variables: Variables, objective: LossFunction, description: str = "optimising") -> OptimResult:
        """Run ``settings.steps`` optimiser steps on ``variables`` plus a final evaluation-only iterate."""
        s = self.settings
        start = time.perf_counter()
        groups = variables.param_groups()
        optimizer = s.optimizer(groups) if groups else None
        weights = linear_weights(min(s.loss_steps, self.sampler.num_steps))
        iterates: list[Iterate] = []
        best_inputs: dict[str, torch.Tensor] = {}
        best_image = None
        error = None
        iterations = range(s.steps + 1)
        for it in self.progress(iterations, description) if self.progress else iterations:
            train = it < s.steps and optimizer is not None
            with torch.set_grad_enabled(train):
                inputs = variables.inputs(it, train)
            if train and self.memory.plain_steps is None:
                self.plan_checkpointing(inputs.z_T, inputs.cond, inputs.uncond, inputs.noise)
            with torch.set_grad_enabled(train):
                latents, images = self.render(inputs.z_T, inputs.cond, inputs.uncond, k=None if train else 1,
                                              noise=inputs.noise)
            with torch.no_grad():
                loss, metrics = objective(images[-1].detach(), False, latents[-1].detach())
            loss_value = float(loss)
            image = images[-1].detach().cpu()
            keep = it % s.keep_images_every == 0 or it == s.steps
            iterate = Iterate(it, image if keep else None, loss_value, metrics)
            iterates.append(iterate)
            if not math.isfinite(loss_value):
                error = f"non-finite loss at iterate {it}; kept the best iterate so far"
                break
            if s.select == "last" or min(iterates, key=lambda i: i.loss).index == it:
                best_inputs, best_image = variables.snapshot(inputs), image
            if train:
                optimizer.zero_grad(set_to_none=True)
                train_loss = self.training_backward(objective, images, latents, weights)
                iterate.train_loss = float(train_loss)
                if not torch.isfinite(train_loss):
                    error = f"non-finite training loss at iterate {it}; kept the best iterate so far"
                    break
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], s.grad_clip)
                optimizer.step()
                variables.project()
            if self.callback is not None:
                self.callback(iterate)
        finite = [i for i in iterates if math.isfinite(i.loss)]
        if not finite:
            best = 0
        elif s.select == "last":
            best = finite[-1].index
        else:
            best = min(finite, key=lambda i: i.loss).index
        if iterates[best].image is None:
            iterates[best].image = best_image
        return OptimResult(iterates, best, error, time.perf_counter() - start, best_inputs)
