"""SAM / HQ-SAM foreground masks from attention-sampled point prompts (transformers ``SamHQModel`` / ``SamModel``).

DiG-IN feeds HQ-SAM ViT-H with ``sam_num_points=5`` positive point prompts sampled from the squashed attention map,
``multimask_output=False``, ``hq_token_only=True``, and thresholds the mask logits at 0 at the original image size.
Differences from the authors' code, on purpose:

* the model is loaded once, at construction (theirs is re-read from disk on every call);
* the point sampling follows the authors' rule by default, with a real diversification as an option (see
  :func:`~digin_cli.segmentation.points.sample_points`);
* an empty SAM mask falls back to the thresholded attention map (with a warning) instead of an empty foreground.

``tiny=True`` builds a seeded tiny random model of the same class (:func:`tiny_sam`) with no weights: the machinery
runs anywhere, the masks are meaningless.
"""

from __future__ import annotations

import logging

import torch

from digin_cli.errors import DiginError, hub_loading
from digin_cli.segmentation.base import Segmenter
from digin_cli.segmentation.points import SAMPLING, sample_points

log = logging.getLogger(__name__)

VARIANTS = ("sam_hq", "sam")
TINY_IMAGE_SIZE = 64


def _classes(variant: str):
    """(model class, processor class, config class, transformers model_type) of a variant."""
    if variant == "sam_hq":
        from transformers import SamHQConfig, SamHQModel, SamHQProcessor

        return SamHQModel, SamHQProcessor, SamHQConfig, "sam_hq"
    if variant == "sam":
        from transformers import SamConfig, SamModel, SamProcessor

        return SamModel, SamProcessor, SamConfig, "sam"
    raise DiginError(f"unknown segmentation.variant '{variant}' — use one of: {', '.join(VARIANTS)}")


def tiny_sam_config(variant: str = "sam_hq", image_size: int = TINY_IMAGE_SIZE):
    """A tiny SAM / HQ-SAM config: ViT of width 32, 2 layers (the 2nd global), 8 px patches, 16-wide decoder."""
    _, _, config_cls, _ = _classes(variant)
    vision = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                  num_pos_feats=8)  # num_pos_feats = prompt hidden_size / 2 (shared positional embedding)
    prompt = dict(hidden_size=16, image_size=image_size, patch_size=8, mask_input_channels=4)
    decoder = dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16)
    if variant == "sam_hq":
        decoder["vit_dim"] = vision["hidden_size"]  # HQ features read the ViT's intermediate embeddings
    return config_cls(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam_processor(variant: str = "sam_hq", image_size: int = TINY_IMAGE_SIZE):
    """The processor of the real checkpoints, sized for the tiny model (longest edge and padding = ``image_size``)."""
    from transformers import SamImageProcessor

    _, processor_cls, _, _ = _classes(variant)
    mask_side = image_size // 4
    image_processor = SamImageProcessor(size={"longest_edge": image_size},
                                        pad_size={"height": image_size, "width": image_size},
                                        mask_size={"longest_edge": mask_side},
                                        mask_pad_size={"height": mask_side, "width": mask_side})
    return processor_cls(image_processor=image_processor)


def tiny_sam(variant: str = "sam_hq", seed: int = 0, image_size: int = TINY_IMAGE_SIZE):
    """A seeded tiny random ``(model, processor)`` pair, identical on every machine; save it with ``save_pretrained``
    to get a local folder that loads through the real ``from_pretrained`` path."""
    model_cls, _, _, _ = _classes(variant)
    config = tiny_sam_config(variant, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval(), tiny_sam_processor(variant, image_size)



def load_sam(pretrained: str, variant: str = "sam_hq"):
    """Load ``(model, processor)`` through ``from_pretrained`` (hub id or local folder); failures -> DiginError."""
    from transformers import AutoConfig

    model_cls, processor_cls, _, model_type = _classes(variant)
    pretrained = str(pretrained)
    with hub_loading(pretrained, what="segmentation weights", local_what=f"a {model_type} model",
                     fix="set segmentation.pretrained=/path/to/a/local/folder, or use segmentation=attention "
                         "(no weights)",
                     local_fix="point segmentation.pretrained= at a folder written by save_pretrained of the model "
                               "and its processor"):
        config = AutoConfig.from_pretrained(pretrained)
        if getattr(config, "model_type", None) != model_type:
            other = "sam" if model_type == "sam_hq" else "sam_hq"
            raise DiginError(f"segmentation weights '{pretrained}' are a '{getattr(config, 'model_type', '?')}' "
                             f"checkpoint, not '{model_type}' — set segmentation.variant={other} or point "
                             f"segmentation.pretrained= at a {model_type} checkpoint")
        model = model_cls.from_pretrained(pretrained, config=config)
        processor = processor_cls.from_pretrained(pretrained)
    return model.eval(), processor


class SamSegmenter(Segmenter):
    """``segmentation=sam_hq`` / ``sam`` / ``tiny_sam``: SAM masks prompted by points sampled from the attention map.

    Args:
        pretrained: hub id or local folder holding the model and its processor (ignored with ``tiny=True``).
        variant: ``'sam_hq'`` (HQ-SAM, the paper's; uses ``hq_token_only=True``) or ``'sam'``.
        num_points: point prompts per image (authors: 5), all positive.
        threshold: sampling threshold on the squashed map (authors: 0.35); also the fallback mask's threshold.
        multimask: ask SAM for 3 masks and keep the one with the best predicted IoU (authors: False, one mask).
        point_sampling: ``'authors'`` (independent draws with replacement, the authors' rule) or ``'spread'``
            (digin's diversification, see :func:`~digin_cli.segmentation.points.sample_points`).
        min_distance_frac: ``spread``'s diversification width, a fraction of the image side (0 = none).
        seed: the point-sampling seed; each ``segment`` call starts from it, so results do not depend on call order.
        tiny: build a tiny random model (:func:`tiny_sam`) instead of loading weights.
        ops, ops_reference_size, squash_threshold, name, device: see :class:`Segmenter`.
    """

    def __init__(self, pretrained: str | None = None, variant: str = "sam_hq", num_points: int = 5,
                 threshold: float = 0.35, multimask: bool = False, min_distance_frac: float = 0.1, seed: int = 0,
                 tiny: bool = False, point_sampling: str = "authors", **kwargs):
        super().__init__(threshold=threshold, **kwargs)
        _classes(variant)  # validates the variant
        if int(num_points) < 1:
            raise DiginError(f"segmentation.num_points must be >= 1, got {num_points}")
        if point_sampling not in SAMPLING:
            raise DiginError(f"segmentation.point_sampling must be one of {', '.join(SAMPLING)}, got "
                             f"'{point_sampling}' — use authors (the paper's rule) or spread")
        self.point_sampling = point_sampling
        self.variant = variant
        self.num_points = int(num_points)
        self.multimask = bool(multimask)
        self.min_distance_frac = float(min_distance_frac)
        self.seed = int(seed)
        self.tiny = bool(tiny)
        if self.tiny:
            self.pretrained = None
            model, self.processor = tiny_sam(variant, seed=self.seed)
        else:
            if not pretrained:
                raise DiginError("segmentation.pretrained is empty — set it to a hub id or a local folder, or use "
                                 "segmentation=tiny_sam / segmentation=attention (no weights)")
            self.pretrained = str(pretrained)
            model, self.processor = load_sam(self.pretrained, variant)
        self.model = model.to(self.device).requires_grad_(False)
        self.last_points: list[torch.Tensor] = []  # the prompts of the last segment() call, per image, for plots

    def segment(self, image, attention_map, latent_hw=None):
        self.last_points = []
        self._generator = torch.Generator().manual_seed(self.seed)
        return super().segment(image, attention_map, latent_hw)

    def points(self, score: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(num_points, 2)`` integer ``(x, y)`` prompts sampled from a squashed map ``(H, W)``."""
        return sample_points(score, self.num_points, self.threshold, generator=generator,
                             min_distance_frac=self.min_distance_frac, sampling=self.point_sampling)

    @torch.no_grad()
    def sam_mask(self, image: torch.Tensor, points: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Run SAM on one image ``(3, H, W)`` in [0, 1] -> mask logits ``(H, W)`` at the image's size.

        ``points``: ``(P, 2)`` positive ``(x, y)`` prompts, all for one object. ``boxes``: ``(N, 4)``
        ``(x0, y0, x1, y1)`` pixel boxes, one object each (GroundingDINO's detections); the result is then the
        pixel-wise maximum over the objects' logits, so ``> 0`` is the union of their masks.
        """
        if (points is None) == (boxes is None):
            raise ValueError("sam_mask takes point prompts or box prompts, exactly one of them")
        pixels = (image.detach().clamp(0.0, 1.0) * 255.0).round().to("cpu", torch.uint8)  # as the authors feed SAM
        if points is not None:
            prompts = dict(input_points=[[[[int(x), int(y)] for x, y in points.tolist()]]],  # image/object/point/xy
                           input_labels=[[[1] * len(points)]])
        else:
            prompts = dict(input_boxes=[[[float(v) for v in box] for box in boxes.tolist()]])  # image/object/xyxy
        inputs = self.processor(images=pixels, return_tensors="pt", **prompts)
        dtype = next(self.model.parameters()).dtype
        kwargs = {"pixel_values": inputs["pixel_values"].to(self.device, dtype), "multimask_output": self.multimask}
        for key in ("input_points", "input_boxes"):
            if key in inputs:
                kwargs[key] = inputs[key].to(self.device, dtype)
        if "input_labels" in inputs:
            kwargs["input_labels"] = inputs["input_labels"].to(self.device)
        if self.variant == "sam_hq":
            kwargs["hq_token_only"] = True
        out = self.model(**kwargs)
        low_res = out.pred_masks[0]  # (objects, masks, h, w)
        if low_res.shape[1] > 1:  # multimask: per object, the mask with the best predicted IoU
            best = out.iou_scores[0].argmax(dim=-1)
            low_res = low_res[torch.arange(low_res.shape[0]), best][:, None]
        logits = self.processor.post_process_masks([low_res.float().cpu()], inputs["original_sizes"],
                                                   inputs["reshaped_input_sizes"], binarize=False)[0]
        return logits[:, 0].amax(dim=0)

    def foreground(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        points = self.points(score, getattr(self, "_generator", None))
        self.last_points.append(points)
        mask = (self.sam_mask(image, points=points) > 0).float()
        if mask.sum() == 0:
            log.warning("SAM returned an empty mask; using the thresholded attention map as the foreground instead")
            mask = (score.detach().cpu() > self.threshold).float()
        return mask

    def __repr__(self) -> str:
        source = "tiny" if self.tiny else self.pretrained
        return (f"SamSegmenter(name={self.name!r}, variant={self.variant!r}, pretrained={source!r}, "
                f"num_points={self.num_points}, point_sampling={self.point_sampling!r}, threshold={self.threshold}, "
                f"ops={list(self.ops)})")


__all__ = ["SamSegmenter", "tiny_sam", "tiny_sam_config", "tiny_sam_processor", "load_sam", "VARIANTS"]
