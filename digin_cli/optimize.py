"""The one DiG-IN optimisation loop (paper Eq. 2, Algorithm 1), shared by every task.

Optimises the sampler inputs — initial latent z_T, per-step conditioning deltas ΔC_t and per-step null-text deltas
Δ∅_t — with Adam parameter groups, by backpropagating a classifier objective through the whole DDIM chain.
Choices that follow the authors' code: z_T is projected back to its initial L2 norm after every step; the training
loss is a linearly weighted sum over the images of the last k steps (x0-predictions, the final one being z_0 itself,
the image we output), each seen through random cutouts; every iterate's plain image is scored without augmentation
and the best one is returned, iterate 0 being the unoptimised SD image; a non-finite loss ends the run for that item
with the error recorded and the best iterate so far kept.

One optimisation step, lean (all exact: the gradients equal a single ``backward()`` of the whole loss):

1. render with grad: the sampler's chain (per-step checkpointing as planned below), then the k loss latents decoded
   in one batched, checkpointed VAE call;
2. the k images (and latents) become detached leaves; the objective's training loss runs on them a chunk of cutouts
   at a time (``chunk`` views, each chunk scaled by its share of the views; views drawn once per image before
   chunking), with a ``backward()`` per chunk, so only one chunk's classifier activations are ever alive;
3. one ``torch.autograd.backward`` from the images and latents, with the leaves' gradients, plus the objective's
   whole-image terms (Eq. 4), through the decoder and the sampler.

What is optimised is a variables object the loop asks for parameter groups, the sampler inputs of each iterate and a
projection after each step: :class:`SamplerDeltas` (DiG-IN: z_T and per-step deltas; ``DiginOptimizer.run`` is its
shorthand) or :class:`PromptVariables` (DiffExplainer Eq. 3-5: a learnable prompt, optionally a new z_T per iterate
drawn from the seed stream (seed, iterate) through the sampler's ``seeded_start``, the expectation over z of the
paper). With a new z per iterate the plain losses of iterates are not comparable, so ``select: last`` returns the
final iterate (the paper's t*); ``select: best`` is DiG-IN's best plain loss. ``keep_images_every`` keeps every n-th
iterate's image on CPU (plus the first, last and selected ones), and a per-iterate ``callback`` sees each
:class:`Iterate` with its training loss (W&B loss curves).

Checkpointing: ``True`` recomputes every denoising step in backward, ``False`` none, ``"auto"`` measures once (first
iterate, saved-tensor hooks) the activation bytes of one step and leaves as many of the last steps un-checkpointed
as fit ``memory_budget_gb`` (on CUDA by default 85 % of the free memory; on CPU without a budget: all checkpointed);
when all of them fit, the batched decode too if the rest of the budget holds its activations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from digin_cli.generation.prompts import SoftPrompt
from digin_cli.generation.sampler import DDIMSampler, SamplerHooks, per_step
from digin_cli.io.progress import track
from digin_cli.objectives import Objective as ChunkedObjective

Objective = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""``objective(images, augment, latents)`` -> (loss, metrics); see :mod:`digin_cli.objectives`."""


@dataclass
class OptimSettings:
    """What the ``optimizer`` config group holds (authors' defaults)."""

    steps: int = 20
    lr: float = 0.01
    latent_lr_factor: float = 0.1
    cond_lr_factor: float = 1.0
    uncond_lr_factor: float = 1.0
    optimize_latent: bool = True
    optimize_cond: bool = True
    optimize_uncond: bool = True
    per_step_deltas: bool = True
    loss_steps: int = 3
    grad_clip: float | None = None
    optimizer: Callable = field(default=partial(torch.optim.Adam))
    checkpointing: bool | str | None = None
    """True / False / "auto" (see the module docstring); None follows the sampler's own setting."""
    memory_budget_gb: float | None = None
    """With checkpointing "auto": memory for un-checkpointed steps' activations, then the decode's (None: CUDA 85 %
    free, CPU 0)."""
    two_stage: bool = True
    """Backward split at the images with chunked cutouts (False: one ``backward()`` of the whole loss)."""
    chunk: int = 4
    """Cutouts per classifier forward / backward in the two-stage backward."""
    fresh_latent: bool = False
    """Prompt variables: a new z_T (and LCM noise) per iterate from the seed stream (seed, iterate)."""
    select: str = "best"
    """``best`` (lowest plain loss, DiG-IN) or ``last`` (the final iterate: the paper's t* with a new z per step)."""
    keep_images_every: int = 1
    """Keep every n-th iterate's image on CPU (the first, last and selected are always kept)."""

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("optimizer.steps must be >= 0")
        if self.loss_steps < 1:
            raise ValueError("optimizer.loss_steps must be >= 1")
        if self.chunk < 1:
            raise ValueError("optimizer.augment.chunk must be >= 1")
        if self.checkpointing not in (None, True, False, "auto"):
            raise ValueError("optimizer.checkpointing must be true, false or auto")
        if self.select not in ("best", "last"):
            raise ValueError("optimizer.select must be best or last")
        if self.keep_images_every < 1:
            raise ValueError("optimizer.keep_images_every must be >= 1")


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


@dataclass
class SamplerInputs:
    """What one iterate feeds the sampler."""

    z_T: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor | None
    noise: object | None = None
    """The stochastic sampler's recorded noise (``seeded_start``); None for DDIM."""


class SamplerDeltas:
    """DiG-IN's variables (Algorithm 1): z_T, per-step conditioning deltas ΔC_t and null-text deltas Δ∅_t.

    Adam groups with the authors' learning-rate factors; after every step z_T is projected back to its initial L2
    norm (the sphere where N(0, I) noise lives; drifting off it leaves SD's training distribution).
    """

    def __init__(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, settings: OptimSettings,
                 num_steps: int, noise: object | None = None):
        s, T = settings, num_steps
        self.cond, self.uncond, self.noise = cond, uncond, noise
        self.z = z_T.detach().clone().float().requires_grad_(s.optimize_latent)
        self.init_norm = self.z.detach().norm()

        def delta(base, wanted):
            shape = (T, *base.shape[-3:]) if s.per_step_deltas else base.shape[-3:]
            return torch.zeros(shape, device=base.device, requires_grad=wanted)

        self.dc = delta(cond, s.optimize_cond)
        self.du = delta(uncond, s.optimize_uncond) if uncond is not None else None
        self.groups = [{"params": [self.z], "lr": s.lr * s.latent_lr_factor}] if s.optimize_latent else []
        if s.optimize_cond:
            self.groups.append({"params": [self.dc], "lr": s.lr * s.cond_lr_factor})
        if s.optimize_uncond and self.du is not None:
            self.groups.append({"params": [self.du], "lr": s.lr * s.uncond_lr_factor})

    def param_groups(self) -> list[dict]:
        return self.groups

    def inputs(self, iterate: int, train: bool) -> SamplerInputs:
        uncond = self.uncond + self.du if self.du is not None else self.uncond
        return SamplerInputs(self.z, self.cond + self.dc, uncond, self.noise)

    @torch.no_grad()
    def project(self) -> None:
        self.z.mul_(self.init_norm / self.z.norm())

    def snapshot(self, inputs: SamplerInputs) -> dict[str, torch.Tensor]:
        return {"z_T": inputs.z_T.detach().clone(), "cond": inputs.cond.detach().clone(),
                "uncond": inputs.uncond.detach().clone() if inputs.uncond is not None else None}


def stream_seed(seed: int, index: int, stream: int = 0) -> int:
    """The ``index``-th seed of ``seed``'s stream: stream 0 gives iterate ``index``'s z_T, stream 1 the samples drawn
    after optimisation, so explanation samples never reuse a z the optimisation saw (numpy ``SeedSequence``)."""
    spawn_key = (int(stream),) if stream else ()
    return int(np.random.SeedSequence([int(seed), int(index)], spawn_key=spawn_key).generate_state(1)[0])


class PromptVariables:
    """DiffExplainer's variables (Eq. 3-5): the learnable rows of a :class:`SoftPrompt` (or a hard prompt's logits).

    Each iterate encodes the prompt (a straight-through Gumbel sample of a hard prompt while training, its argmax
    when evaluating) and starts from z_T = ``sampler.seeded_start(s)``: s = :func:`stream_seed` (seed, iterate) when
    ``settings.fresh_latent`` (the paper: "a new z at each optimization step", so t* does not overfit one z), else
    ``seed`` itself (DEXTER's fixed z).
    """

    def __init__(self, prompt: SoftPrompt, sampler: DDIMSampler, seed: int, settings: OptimSettings,
                 uncond: torch.Tensor | None = None):
        self.prompt, self.sampler, self.seed, self.uncond = prompt, sampler, int(seed), uncond
        self.fresh, self.steps = bool(settings.fresh_latent), int(settings.steps)
        self.prompt_state: dict | None = None
        """A hard prompt's state (text, top probability, ...) when the last iterate's inputs were drawn."""
        self.groups = [{"params": [p for p in prompt.parameters() if p.requires_grad],
                        "lr": settings.lr * settings.cond_lr_factor}]

    def param_groups(self) -> list[dict]:
        return self.groups

    def latent_seed(self, iterate: int) -> int:
        return stream_seed(self.seed, iterate) if self.fresh else self.seed

    def inputs(self, iterate: int, train: bool) -> SamplerInputs:
        z_T, noise = self.sampler.seeded_start(self.latent_seed(iterate))
        if train and hasattr(self.prompt, "set_progress"):  # a hard prompt's temperature schedule
            self.prompt.set_progress(iterate / max(self.steps - 1, 1))
        uncond = self.uncond if self.sampler.guided else None
        cond = self.prompt(sample=train)
        # Read by per-iterate callbacks, which run after the step has moved the prompt.
        self.prompt_state = self.prompt.state() if hasattr(self.prompt, "state") else None
        return SamplerInputs(z_T, cond, uncond, noise)

    def project(self) -> None:
        pass

    def snapshot(self, inputs: SamplerInputs) -> dict[str, torch.Tensor]:
        state = {f"prompt.{k}": v.detach().clone() for k, v in self.prompt.state_dict().items()}
        return {**state, "z_T": inputs.z_T.detach().clone(), "cond": inputs.cond.detach().clone()}


def linear_weights(k: int) -> list[float]:
    """The authors' 'linear' schedule over the last k steps: 1/6, 2/6, 3/6 for k = 3."""
    total = k * (k + 1) / 2
    return [(j + 1) / total for j in range(k)]


class DiginOptimizer:
    """Optimise sampler inputs so that generated images minimise an objective.

    Args:
        sampler: the differentiable DDIM sampler.
        settings: learning rates, steps and which variables to optimise.
        hooks: per-step sampler hooks (prompt-to-prompt injection, mask blending), fixed during optimisation.
    """

    def __init__(self, sampler: DDIMSampler, settings: OptimSettings, hooks: SamplerHooks | None = None,
                 callback: Callable[[Iterate], None] | None = None):
        self.sampler, self.settings, self.hooks, self.callback = sampler, settings, hooks, callback
        self.step_bytes: int | None = None
        """Activation bytes of one denoising step, measured on the first iterate with checkpointing "auto"."""
        self.plain_steps: int | None = None
        """How many of the last steps run un-checkpointed (None until planned: True / False / sampler default)."""
        self.decode_bytes: int | None = None
        """Activation bytes of the batched decode of the k loss latents, measured when "auto" fits every step."""
        self.plain_decode = False
        """Whether the decode runs un-checkpointed: "auto" with room for every step and the decoder too."""

    @property
    def checkpointing(self) -> bool | str:
        mode = self.settings.checkpointing
        return self.sampler.checkpointing if mode is None else mode

    def plan_checkpointing(self, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                           noise: object | None = None) -> int:
        """With "auto": measure one step (once) and return how many of the last steps fit the budget un-checkpointed.

        The last steps are the ones left plain: backward meets them first and frees their activations before any
        checkpointed step is recomputed, so the peak is max(n, 1) steps' activations rather than n + 1. When every
        step fits and the rest of the budget holds the decoder's activations for the k loss latents too, the
        decode is left plain as well (``plain_decode``): its recomputation is the fixed cost of a step, the one that
        dominates at small T.
        """
        T = self.sampler.num_steps
        mode = self.checkpointing
        self.plain_decode = False
        if mode != "auto":
            return 0 if mode else T
        budget = self.settings.memory_budget_gb
        device = z.device
        if budget is None:
            if device.type != "cuda":
                return 0  # on CPU "auto" means checkpoint everything unless a budget is given
            budget_bytes = 0.85 * torch.cuda.mem_get_info(device)[0]
        else:
            budget_bytes = float(budget) * 2**30
        if self.step_bytes is None:
            self.step_bytes = step_activation_bytes(self.sampler, z, cond, uncond, self.hooks, noise=noise)
        plain = min(T, int(budget_bytes // max(self.step_bytes, 1)))
        if plain == T:
            if self.decode_bytes is None:
                k = min(self.settings.loss_steps, T)
                latents = z.detach().new_zeros((k * z.shape[0], *z.shape[1:]))
                self.decode_bytes = decode_activation_bytes(self.sampler, latents)
            self.plain_decode = budget_bytes - T * self.step_bytes >= self.decode_bytes
        return plain

    def render(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, k: int | None = None,
               noise: object | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Latents and images in [0, 1] of the last k steps; the last pair is z_0 and its image, the iterate's.

        The k latents are decoded in one batched VAE call (checkpointed unless checkpointing is off, or "auto" found
        room for its activations).
        """
        T = self.sampler.num_steps
        k = min(self.settings.loss_steps, T) if k is None else k
        mode = self.checkpointing
        plain = T if mode is False else (self.plain_steps or 0)
        out = self.sampler.sample(z_T, cond, uncond, keep_last=k, hooks=self.hooks,
                                  checkpoint_step=lambda i: i < T - plain, noise=noise)
        latents = out.x0_predictions[:-1] + [out.latents]
        batch = z_T.shape[0]
        images = self.sampler.decode(torch.cat(latents), checkpointing=mode is not False and not self.plain_decode)
        images = images.split(batch)
        return latents, list(images)

    def training_backward(self, objective: Objective, images: list[torch.Tensor], latents: list[torch.Tensor],
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
            if isinstance(objective, ChunkedObjective):
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

    def run(self, z_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, objective: Objective,
            description: str = "optimising", noise: object | None = None) -> OptimResult:
        """DiG-IN's optimisation of (z_T, ΔC_t, Δ∅_t): :meth:`optimize` over :class:`SamplerDeltas`."""
        deltas = SamplerDeltas(z_T, cond, uncond, self.settings, self.sampler.num_steps, noise)
        return self.optimize(deltas, objective, description)

    def optimize(self, variables, objective: Objective, description: str = "optimising") -> OptimResult:
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
        for it in track(range(s.steps + 1), description):
            train = it < s.steps and optimizer is not None
            with torch.set_grad_enabled(train):
                inputs = variables.inputs(it, train)
            if train and self.plain_steps is None:
                self.plain_steps = self.plan_checkpointing(inputs.z_T, inputs.cond, inputs.uncond, inputs.noise)
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
