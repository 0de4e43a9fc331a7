"""Cross-attention capture and Prompt-to-Prompt injection for the DiG-IN UVCE initialisation (paper Section 5).

One :class:`AttentionController` holds the state of a run and a :class:`CrossAttentionProcessor` per attention module
of the UNet talks to it:

* ``mode="store"``: every cross-attention layer records the softmax probabilities of the *conditional* half of the
  batch (under classifier-free guidance the UNet batch is ``[uncond, cond]``; without guidance all of it is
  conditional), keyed by ``(step, layer_name)``.
* ``mode="inject"``: within the window ``a <= i/T < b`` the conditional half's probabilities are replaced by the
  stored source ones, ``attn = (1-s)*current + s*stored`` with ``s = 1`` inside the window and ``0`` outside,
  after remapping the source's token columns to the target prompt's (``token_map``, see :func:`~digin_cli.generation.token_alignment.token_alignment`).
* ``mode="off"``: plain attention.

What a step needs reaches the processors through the sampler hook (``SamplerHooks(cross_attention_kwargs=
controller.cross_attention_kwargs)``), never through a counter, so a step that gradient checkpointing recomputes
during backward sees exactly the same maps as in the forward pass. The hook resolves the step on the Python side and
hands the processors only that step's state: a dict to store into, or the stored maps to inject (already remapped to
the target prompt's tokens), or nothing outside the window. The step index itself never enters the UNet call, so a
``torch.compile``\ d UNet traces one graph per mode instead of specialising (and recompiling) on every step.

The cross-attention math is written out with the :class:`diffusers.models.attention_processor.Attention` helpers
(the same sequence as diffusers' ``AttnProcessor``) so that the probabilities are available; self-attention layers go
through diffusers' ``AttnProcessor2_0`` (scaled-dot-product attention) unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

MODES = ("off", "store", "inject")
MISSING = object()
"""Default of the processors' per-step kwargs: tells "the sampler hook is missing" from "nothing at this step"."""


class AttentionController:
    """State shared by all :class:`CrossAttentionProcessor` of one UNet.

    Args:
        num_steps: T, the number of denoising steps of the sampler (injection window, :func:`attention_maps`).
        guided: whether the UNet batch is ``[uncond, cond]`` (classifier-free guidance, guidance > 1); otherwise the
            whole batch is conditional.
        mode: ``"off"``, ``"store"`` or ``"inject"`` (may be changed between passes).
        window: ``(a, b)`` fractions of the steps where injection is active (s=1 when ``a <= i/T < b``).
        token_map: optional ``(77, 77)`` matrix M with target attention = source attention @ M.
        store_device: where stored maps live; None (the default) keeps them on the device of the probabilities, so
            injection reads them without a host-to-device copy per layer per step.
        store_dtype: dtype of stored maps (default: the probabilities' dtype).
        store_steps: the step indices whose maps are stored (default all). Storing only the steps that will be
            injected or averaged into a mask keeps the store small enough to live on the accelerator (per-head maps
            of SD 1.5 at 512 px: about 66 MB per step in fp32).
        per_head: store every head's map (``(B, heads, h, w, 77)``, the default) or only the head average
            (``(B, h, w, 77)``, ``heads`` times smaller: enough for :func:`attention_maps`). Injection needs per-head
            maps: injecting the average gives every head the same map, which changes the image even with an unchanged
            prompt (tiny model: 0.013-0.019 max abs pixel change, and a larger distance to the source image after a
            class-word swap than no injection at all), whereas per-head injection reproduces the store pass exactly.
    """

    def __init__(self, num_steps: int, *, guided: bool = True, mode: str = "off",
                 window: tuple[float, float] = (0.0, 1.0), token_map: torch.Tensor | None = None,
                 store_device: torch.device | str | None = None, store_dtype: torch.dtype | None = None,
                 store_steps: Collection[int] | None = None, per_head: bool = True):
        if int(num_steps) <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        self.num_steps = int(num_steps)
        self.guided = bool(guided)
        self.mode = mode
        self.window = window
        self.token_map = token_map
        self.store_device = torch.device(store_device) if store_device is not None else None
        self.store_dtype = store_dtype
        self.store_steps = None if store_steps is None else frozenset(int(i) for i in store_steps)
        self.per_head = bool(per_head)
        self._maps: dict[tuple[int, str], torch.Tensor] = {}
        self._pending: dict[int, dict[str, torch.Tensor]] = {}  # per-step dicts handed to the processors to fill
        self.latent_hw: tuple[int, int] | None = None  # set by attention_control from the UNet input

    @classmethod
    def for_sampler(cls, sampler, **kwargs) -> AttentionController:
        """A controller matching a :class:`~digin_cli.generation.sampler.DDIMSampler` (its T and guidance)."""
        return cls(sampler.num_steps, guided=sampler.guided, **kwargs)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"attention mode must be one of {MODES}, got {value!r}")
        self._mode = value

    @property
    def window(self) -> tuple[float, float]:
        return self._window

    @window.setter
    def window(self, value: tuple[float, float]) -> None:
        a, b = (float(v) for v in value)
        if not 0.0 <= a <= b:
            raise ValueError(f"injection window must satisfy 0 <= a <= b, got {value}")
        self._window = (a, b)

    def strength(self, i: int) -> float:
        """Injection strength s at step i: 1 inside the window ``a <= i/T < b``, else 0 (``threshold_a_b``)."""
        a, b = self.window
        return 1.0 if a <= i / self.num_steps < b else 0.0

    def cross_attention_kwargs(self, i: int) -> dict:
        """The per-step kwargs for ``SamplerHooks(cross_attention_kwargs=...)``: step ``i``'s state, no index.

        ``digin_store`` is a dict the processors fill with step i's maps (None when step i is not stored);
        ``digin_inject`` maps each layer to its stored maps ``(B, heads or 1, pixels, 77)``, already multiplied by
        the token map, with ``digin_strength`` s (None outside the window).
        """
        i = int(i)
        if self.mode == "store":
            store = None
            if self.store_steps is None or i in self.store_steps:
                store = self._pending.setdefault(i, {})
            return {"digin_store": store}
        if self.mode == "inject":
            s = self.strength(i)
            if s == 0.0:
                return {"digin_inject": None, "digin_strength": s}
            maps = {name: m for (step, name), m in self.maps.items() if step == i}
            if not maps:
                raise KeyError(f"no stored attention map for step {i}: run a store pass first")
            return {"digin_inject": {name: self._injected(m) for name, m in maps.items()}, "digin_strength": s}
        return {}

    def _injected(self, stored: torch.Tensor) -> torch.Tensor:
        per_head = stored.dim() == 5  # (B, heads, h, w, tokens), else head-averaged (B, h, w, tokens)
        heads = stored.shape[1] if per_head else 1
        stored = stored.reshape(stored.shape[0], heads, -1, stored.shape[-1])
        if self.token_map is not None:
            stored = stored @ self.token_map.to(device=stored.device, dtype=stored.dtype)
        return stored

    @property
    def maps(self) -> dict[tuple[int, str], torch.Tensor]:
        """Stored maps keyed by ``(step, layer name)``."""
        for step, bucket in self._pending.items():  # what the processors stored since the last look
            for name, maps in bucket.items():
                self._maps[(step, name)] = maps
            bucket.clear()
        return self._maps

    @maps.setter
    def maps(self, value: dict[tuple[int, str], torch.Tensor]) -> None:
        self._pending.clear()
        self._maps = dict(value)

    def clear(self) -> None:
        self.maps = {}

    @property
    def layers(self) -> list[str]:
        """Names of the layers with stored maps, in first-stored order."""
        return list(dict.fromkeys(name for _, name in self.maps))

    @property
    def steps(self) -> list[int]:
        return sorted({step for step, _ in self.maps})

    # -- called by the processors ------------------------------------------------------------------------------------
    def spatial_size(self, num_pixels: int) -> tuple[int, int]:
        """(h, w) of a layer with ``num_pixels`` query positions, from the UNet's latent size (ceil-halving)."""
        if self.latent_hw is not None:
            height, width = self.latent_hw
            factor = 1
            while factor <= max(height, width):
                h, w = -(-height // factor), -(-width // factor)
                if h * w == num_pixels:
                    return h, w
                factor *= 2
        side = math.isqrt(num_pixels)
        if side * side != num_pixels:
            raise ValueError(f"cannot infer the spatial size of a layer with {num_pixels} query pixels")
        return side, side

    def process(self, name: str, probs: torch.Tensor, heads: int, store: dict | None | object = None,
                inject: dict | None | object = None, strength: float = 1.0) -> torch.Tensor:
        """Record or replace the conditional half of cross-attention probabilities ``(batch*heads, q, tokens)``.

        ``store`` / ``inject`` / ``strength`` are this step's state from :meth:`cross_attention_kwargs`.
        """
        if self.mode == "off":
            return probs
        if (store if self.mode == "store" else inject) is MISSING:
            raise ValueError(f"attention mode {self.mode!r} needs the step index: sample with "
                             "SamplerHooks(cross_attention_kwargs=controller.cross_attention_kwargs)")
        split = probs.shape[0] // 2 if self.guided else 0
        uncond, cond = probs[:split], probs[split:]
        batch, num_pixels, num_tokens = cond.shape[0] // heads, cond.shape[1], cond.shape[2]
        if self.mode == "store":
            if store is None:
                return probs
            h, w = self.spatial_size(num_pixels)
            with torch.no_grad():
                maps = cond.detach().reshape(batch, heads, h, w, num_tokens)
                if not self.per_head:
                    maps = maps.float().mean(dim=1).to(cond.dtype)
                maps = maps.to(device=self.store_device or maps.device, dtype=self.store_dtype or maps.dtype)
            store[name] = maps
            return probs
        if inject is None:  # outside the window
            return probs
        if name not in inject:
            raise KeyError(f"no stored attention map for layer {name}: run a store pass first")
        stored = inject[name].to(device=cond.device, dtype=cond.dtype)
        if stored.shape[0] not in (1, batch) or stored.shape[1] not in (1, heads) or stored.shape[2:] != (
                num_pixels, num_tokens):
            raise ValueError(f"stored map {tuple(stored.shape)} does not fit the conditional batch "
                             f"({batch}, {heads}, {num_pixels}, {num_tokens}) of layer {name}")
        stored = stored.expand(batch, heads, num_pixels, num_tokens).reshape(cond.shape)
        mixed = stored if strength == 1.0 else (1.0 - strength) * cond + strength * stored
        return torch.cat([uncond, mixed]) if split else mixed


class CrossAttentionProcessor:
    """A diffusers attention processor that exposes cross-attention probabilities to an :class:`AttentionController`.

    Cross-attention (``encoder_hidden_states`` given) is computed step by step as diffusers' ``AttnProcessor`` does;
    self-attention is delegated to ``AttnProcessor2_0``. The per-step ``digin_*`` kwargs (from
    :meth:`AttentionController.cross_attention_kwargs`) are accepted by both.
    """

    def __init__(self, controller: AttentionController, name: str):
        self.controller = controller
        self.name = name
        self._self_attention = AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 digin_store: dict | None | object = MISSING, digin_inject: dict | None | object = MISSING,
                 digin_strength: float = 1.0, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            return self._self_attention(attn, hidden_states, None, attention_mask, temb)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)

        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        attention_probs = self.controller.process(self.name, attention_probs, attn.heads, digin_store, digin_inject,
                                                  digin_strength)
        hidden_states = torch.bmm(attention_probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def attention_control(unet, controller: AttentionController) -> Iterator[AttentionController]:
    """Install a :class:`CrossAttentionProcessor` on every attention module of ``unet``; restore the originals on exit.

    Also records the UNet's latent size on the controller so that maps of non-square latents get their (h, w).
    With gradient checkpointing, call ``backward()`` inside the context: the recomputed steps use whatever processors
    are installed at that time (outside, torch raises a CheckpointError because the recomputed graph differs).
    """
    original = dict(unet.attn_processors)

    def remember_latent_size(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        if sample is not None:
            controller.latent_hw = (int(sample.shape[-2]), int(sample.shape[-1]))

    handle = unet.register_forward_pre_hook(remember_latent_size, with_kwargs=True)
    unet.set_attn_processor({name: CrossAttentionProcessor(controller, name.removesuffix(".processor"))
                             for name in original})
    try:
        yield controller
    finally:
        handle.remove()
        unet.set_attn_processor(original)


# -- maps for masks ----------------------------------------------------------------------------------------------------
def _map_height(maps: torch.Tensor) -> int:
    return int(maps.shape[-3])  # (B, heads, h, w, tokens) or (B, h, w, tokens)


def attention_maps(controller: AttentionController, words_token_ids: Sequence[int], steps: range | None = None,
                   resolution: int | tuple[int, int] = 16, *, batch_index: int = 0,
                   sizes: Collection[int] | None = None) -> torch.Tensor:
    """Average stored cross-attention maps of some tokens into one ``(H, W)`` map in [0, 1].

    Averages over heads, over the layers (only those whose map height is in ``sizes`` when given; always only maps
    of at least 2x2, a 1x1 map has no layout), over ``steps`` (default: the first half, ``i/T < 0.5``) and over the
    token positions ``words_token_ids`` (see :func:`word_token_indices`) at the maps' own resolution (maps of
    different sizes are bilinearly resized to the largest one first), divides by the max and resizes bicubically to
    ``resolution``, as the DiG-IN authors' foreground segmentation does (clamped to [0, 1]: bicubic overshoots).
    """
    if steps is None:
        steps = range(math.ceil(controller.num_steps / 2))
    tokens = list(words_token_ids)
    if not tokens:
        raise ValueError("no token positions given")
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    wanted = set(steps)
    selected = []
    for (step, _name), maps in controller.maps.items():
        h, w = maps.shape[-3:-1]
        if step not in wanted or min(h, w) < 2 or (sizes is not None and h not in sizes):
            continue
        m = maps[batch_index].float()
        if m.dim() == 4:  # per-head maps (heads, h, w, tokens)
            m = m.mean(dim=0)
        selected.append(m[..., tokens].mean(dim=-1))
    if not selected:
        raise ValueError(f"no stored cross-attention maps for steps {list(wanted)}"
                         f"{f' of sizes {sorted(sizes)}' if sizes is not None else ''} (run a store pass first)")
    common = max((m.shape for m in selected), key=lambda hw: hw[0] * hw[1])
    total = sum(m if m.shape == common else
                F.interpolate(m[None, None], size=tuple(common), mode="bilinear", align_corners=False)[0, 0]
                for m in selected)
    peak = total.max()
    if not peak > 0:
        raise ValueError("the averaged attention map is zero everywhere")
    total = (total / peak)[None, None]
    if tuple(total.shape[-2:]) != size:
        total = F.interpolate(total, size=size, mode="bicubic", align_corners=False)
    return total[0, 0].clamp_(0.0, 1.0)


def mask_map_size(controller: AttentionController, steps: Collection[int] | None = None) -> tuple[int, int]:
    """(height used, height wanted) of the maps a foreground mask is made of.

    The authors average only the cross-attention maps at 1/4 of the latent side (16x16 for SD's 64x64 latents at
    512 px), to which their squash and thresholds are tuned. When no layer has that size (tiny models) the nearest
    stored height is used (the larger one on a tie); callers report the fallback.
    """
    if controller.latent_hw is None:
        raise ValueError("the controller has not seen a UNet input: run a store pass first")
    wanted = max(1, controller.latent_hw[0] // 4)
    heights = {_map_height(m) for (step, _), m in controller.maps.items()
               if (steps is None or step in steps) and min(m.shape[-3:-1]) >= 2}
    if not heights:
        raise ValueError("no stored cross-attention maps of at least 2x2 (run a store pass first)")
    return min(heights, key=lambda h: (abs(h - wanted), -h)), wanted
