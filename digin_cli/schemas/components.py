"""Schemas of the component groups: ``classifier`` (and ``classifier2``), ``segmentation``, ``captioner`` and
``logger``. One schema per class a file instantiates; its fields are exactly the keyword arguments of that class
(tests/test_config_schemas.py compares them with ``inspect.signature``), so ``+classifier.bogus=1`` is refused
before a run and no source needs parsing. Ranges a constructor checks itself (the Python API builds components
without any config) stay in the constructor: the schema adds the types, the choices and the keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING

from digin_cli.schemas.fields import ranged

_CLASSIFIERS = "digin_cli.classifiers"
_SEGMENTATION = "digin_cli.segmentation"
INTERPOLATIONS = (None, "bilinear", "bicubic", "nearest")


@dataclass
class TimmClassifierSchema:
    """conf/classifier/base/timm.yaml (every timm preset composes it)."""

    _target_: str = f"{_CLASSIFIERS}.timm_zoo.TimmClassifier"
    name: str = MISSING
    pretrained: bool = MISSING
    checkpoint: Optional[str] = MISSING
    trusted_checkpoint: bool = MISSING
    grad_checkpointing: Any = ranged(choices=(True, False, "auto"), example="auto")
    num_classes: Optional[int] = ranged(minimum=1, example=1000)
    class_names: Any = MISSING  # a list | names.txt | names.json | imagenet | null
    input_size: Any = MISSING  # int | [height, width] | null
    interpolation: Optional[str] = ranged(choices=INTERPOLATIONS, example="bicubic")
    mean: Optional[List[float]] = MISSING
    std: Optional[List[float]] = MISSING


@dataclass
class HFClassifierSchema:
    """conf/classifier/hf.yaml: a transformers image classifier (hub id or folder)."""

    _target_: str = f"{_CLASSIFIERS}.huggingface.HFClassifier"
    pretrained: str = MISSING
    revision: Optional[str] = MISSING
    input_size: Any = MISSING
    mean: Optional[List[float]] = MISSING
    std: Optional[List[float]] = MISSING
    interpolation: Optional[str] = ranged(choices=INTERPOLATIONS, example="bicubic")


@dataclass
class TorchModuleSchema:
    """conf/classifier/torch_module.yaml: the user's own nn.Module. ``model`` stays open: its keyword arguments are
    the user's (``+classifier.model.num_classes=10``)."""

    _target_: str = f"{_CLASSIFIERS}.torch_module.TorchModuleClassifier"
    _recursive_: bool = False
    model: Any = MISSING
    checkpoint: Optional[str] = MISSING
    trusted_checkpoint: bool = MISSING
    class_names: Any = MISSING
    input_size: Any = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    interpolation: str = ranged(choices=INTERPOLATIONS[1:], example="bilinear")
    features_layer: Optional[str] = MISSING


@dataclass
class OpenClipZeroShotSchema:
    """conf/classifier/clip_vit_b16_zeroshot.yaml: an open_clip model with a zero-shot head."""

    _target_: str = f"{_CLASSIFIERS}.openclip_zeroshot.OpenClipZeroShot"
    model: str = MISSING
    pretrained: Optional[str] = MISSING
    templates: str = ranged(choices=("openai", "simple"), example="openai")
    cache_dir: Optional[str] = MISSING


@dataclass
class TinyClassifierSchema:
    """conf/classifier/tiny_*.yaml: a small random CNN for tests and demos."""

    _target_: str = f"{_CLASSIFIERS}.tiny.TinyClassifier"
    seed: int = MISSING
    width: int = ranged(minimum=1, example=8)
    input_size: int = ranged(minimum=8, example=32)
    num_classes: int = ranged(minimum=1, example=1000)


@dataclass
class NoSegmentationSchema:
    """conf/segmentation/none.yaml: no segmenter (the tasks that need one say so in one line)."""

    name: str = MISSING


@dataclass
class AttentionMapSchema(NoSegmentationSchema):
    """What makes a mask (or SAM's point prompts) of the squashed cross-attention map."""

    threshold: float = ranged(minimum=0, maximum=1, example=0.35)
    squash_threshold: float = ranged(minimum=0, maximum=1, example=0.3)
    ops: List[str] = MISSING
    ops_reference_size: Optional[int] = ranged(minimum=1, example=512)


@dataclass
class AttentionSegmenterSchema(AttentionMapSchema):
    """conf/segmentation/attention.yaml: the squashed cross-attention map itself (no weights)."""

    _target_: str = f"{_SEGMENTATION}.base.AttentionSegmenter"
    binarize: bool = MISSING


@dataclass
class SamWeightsSchema(NoSegmentationSchema):
    """Which SAM: a hub id or folder of SAM / HQ-SAM (tiny: random weights for the tests), and its seed."""

    pretrained: Optional[str] = MISSING
    variant: str = ranged(choices=("sam_hq", "sam"), example="sam_hq")
    tiny: bool = False
    multimask: bool = MISSING
    seed: int = MISSING


@dataclass
class SamSegmenterSchema(AttentionMapSchema, SamWeightsSchema):
    """conf/segmentation/sam*.yaml: SAM / HQ-SAM prompted with points drawn from the attention map."""

    _target_: str = f"{_SEGMENTATION}.sam.SamSegmenter"
    num_points: int = ranged(minimum=1, example=5)
    point_sampling: str = ranged(choices=("authors", "spread"), example="authors")
    min_distance_frac: float = ranged(minimum=0, example=0.1)


@dataclass
class GroundedSamSchema(SamWeightsSchema):
    """conf/segmentation/grounded_sam.yaml: GroundingDINO boxes from text, then SAM (DiffExplainer Sec. 3.3)."""

    _target_: str = f"{_SEGMENTATION}.grounding.GroundedSam"
    detector: Optional[str] = MISSING
    threshold: float = ranged(minimum=0, maximum=1, example=0.35)  # GroundingDINO's box score
    text_threshold: float = ranged(minimum=0, maximum=1, example=0.25)
    masks: str = ranged(choices=("sam", "boxes"), example="sam")


@dataclass
class NoCaptionerSchema:
    """conf/captioner/none.yaml: the filled template is the caption."""

    name: str = MISSING
    template: str = MISSING


@dataclass
class HFCaptionerSchema(NoCaptionerSchema):
    """conf/captioner/hf.yaml, objects.yaml: a transformers captioning / vision-language model."""

    _target_: str = "digin_cli.captioning.HFCaptioner"
    model: str = MISSING
    max_new_tokens: int = ranged(minimum=1, example=20)
    num_beams: int = ranged(minimum=1, example=3)
    max_tokens: int = ranged(minimum=8, maximum=75, example=60)
    condition: bool = MISSING


@dataclass
class LoggerSchema:
    """conf/logger/*.yaml: Weights & Biases."""

    mode: str = ranged(choices=("online", "offline", "disabled"), example="offline")
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING
    tags: List[str] = MISSING


#: (group, name) -> schema, stored as ``schema/<group>/<name>`` and named first in each file's defaults.
COMPONENT_SCHEMAS: dict[tuple[str, str], type] = {
    ("classifier", "timm"): TimmClassifierSchema, ("classifier", "hf"): HFClassifierSchema,
    ("classifier", "torch_module"): TorchModuleSchema, ("classifier", "openclip_zeroshot"): OpenClipZeroShotSchema,
    ("classifier", "tiny"): TinyClassifierSchema,
    ("segmentation", "none"): NoSegmentationSchema, ("segmentation", "attention"): AttentionSegmenterSchema,
    ("segmentation", "sam"): SamSegmenterSchema, ("segmentation", "grounded_sam"): GroundedSamSchema,
    ("captioner", "none"): NoCaptionerSchema, ("captioner", "hf"): HFCaptionerSchema,
    ("logger", "wandb"): LoggerSchema,
}
