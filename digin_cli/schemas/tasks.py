"""Schemas of the ``task`` group: one per task, assembled from the fragments that conf/task/common/ composes (the
same blocks, here as base classes). Types and ranges only: the values and their reasons live in the YAML files, so
every field defaults to MISSING and a task file that forgets a key fails while composing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from digin_cli.schemas.fields import ranged


@dataclass
class MetaSchema:
    """What report.html shows first and which keys only choose items (never part of a result)."""

    key_images: List[str] = MISSING
    item_keys: List[str] = MISSING


@dataclass
class InversionSchema:
    """Null-text inversion (Mokady et al.): inner Adam steps per DDIM step, early stop on the step loss."""

    inner_steps: int = ranged(minimum=0, example=10)
    early_stop: float = ranged(minimum=0, example=1.0e-5)


@dataclass
class P2PSchema:
    """Prompt-to-prompt schedules, fractions of the steps: every (injection, blend) pair is a candidate."""

    injections: List[float] = MISSING
    blends: List[float] = MISSING


@dataclass
class TaskSchema:
    """What every task has: its name, its metadata and sharding (conf/task/common/sharding.yaml)."""

    name: str = MISSING
    meta: MetaSchema = field(default_factory=MetaSchema)
    shard_index: int = ranged(minimum=0, example=0)
    num_shards: int = ranged(minimum=1, example=8)


@dataclass
class ImageFilesSchema:
    """conf/task/common/image_files.yaml: the centre crop and the unreadable-file policy."""

    crop_fraction: float = ranged(minimum=0, above=True, maximum=1, example=0.8)
    skip_unreadable: bool = MISSING


@dataclass
class RealImagesSchema(ImageFilesSchema):
    """conf/task/common/real_images.yaml: which real images, Eq. 4's weights, the mask and the inversion."""

    images: Any = MISSING  # a file, a folder or null
    indices: List[int] = MISSING
    image_classes: List[Any] = MISSING  # names or indices
    images_per_class: int = ranged(minimum=1, example=1)
    w_vae: float = ranged(minimum=0, example=25.0)
    w_px: float = ranged(minimum=0, example=250.0)
    mask_steps: float = ranged(minimum=0, maximum=1, example=0.5)
    inversion: InversionSchema = field(default_factory=InversionSchema)


@dataclass
class ObjectHeldSchema:
    """conf/task/common/object_held.yaml: feature counterfactuals with the object held."""

    start: Any = MISSING  # auto | predicted | label | a class name or index
    mask_words: Any = MISSING  # null | words | {class: words}
    cutouts: int = ranged(minimum=0, example=0)
    p2p: P2PSchema = field(default_factory=P2PSchema)


@dataclass
class NeuronsSchema:
    """conf/task/common/neurons.yaml: features of phi by index, or a class's top_k."""

    neurons: List[int] = MISSING
    top_features_of: Any = MISSING  # null | a class name or index
    top_k: int = ranged(minimum=1, example=3)
    reference_class: Any = MISSING
    feature_batch_size: int = ranged(minimum=1, example=32)


@dataclass
class PromptSchema:
    """conf/task/common/prompt.yaml: DiffExplainer's learnable tokens."""

    features: List[int] = MISSING
    feature_weight: float = MISSING
    seeds: List[int] = MISSING
    prefix: str = MISSING
    num_tokens: int = ranged(minimum=1, example=1)
    init: str = MISSING  # random | a word
    num_samples: int = ranged(minimum=1, example=10)


DIRECTIONS = ("max", "min", "both")


@dataclass
class DisagreementSchema(TaskSchema):
    classes: List[Any] = MISSING
    seeds: List[int] = MISSING
    prompt: str = MISSING


@dataclass
class SampleSchema(TaskSchema):
    prompts: List[str] = MISSING
    seeds: List[int] = MISSING


@dataclass
class ExplainSchema(PromptSchema, TaskSchema):
    classes: List[Any] = MISSING


@dataclass
class HardPromptSchema(ExplainSchema):
    tau: float = ranged(minimum=0, above=True, example=2.0)
    tau_end: Optional[float] = ranged(minimum=0, above=True, example=0.5)
    whole_words: bool = MISSING
    vocabulary: Any = MISSING  # null | a list of words | a text file


@dataclass
class SpuriousSchema(ImageFilesSchema, PromptSchema, TaskSchema):
    classes: List[Any] = MISSING
    top_k: int = ranged(minimum=1, example=5)
    annotations: Optional[str] = MISSING
    delta: float = ranged(minimum=0, maximum=1, example=0.1)
    cv_folds: int = ranged(minimum=2, example=5)


@dataclass
class NeuronSchema(ImageFilesSchema, NeuronsSchema, TaskSchema):
    pairs: List[Any] = MISSING  # [[class, neuron], ...]
    direction: str = ranged(choices=DIRECTIONS, example="max")
    seeds: List[int] = MISSING
    prompt: Optional[str] = MISSING
    objects: Any = MISSING  # a list | a text file | auto
    object_samples: int = ranged(minimum=1, example=8)
    auto_images: int = ranged(minimum=1, example=20)
    max_objects: int = ranged(minimum=1, example=10)
    prompt_template: str = MISSING
    keep_object: bool = MISSING
    keep_until: float = ranged(minimum=0, maximum=1, example=0.3)
    mask_words: Any = MISSING
    mask_steps: float = ranged(minimum=0, maximum=1, example=0.5)
    reference_images: Optional[str] = MISSING
    top_images: int = ranged(minimum=0, example=20)


@dataclass
class NeuronCfSchema(NeuronsSchema, ObjectHeldSchema, RealImagesSchema, TaskSchema):
    pairs: List[Any] = MISSING  # [[image class, neuron], ...]
    direction: str = ranged(choices=DIRECTIONS, example="both")


@dataclass
class NpcaSchema(ObjectHeldSchema, RealImagesSchema, TaskSchema):
    component_class: Any = MISSING  # a class name or index
    component: int = ranged(minimum=0, example=1)
    component_file: Optional[str] = MISSING
    component_images: Optional[str] = MISSING
    feature_batch_size: int = ranged(minimum=1, example=32)


@dataclass
class VceSchema(RealImagesSchema, TaskSchema):
    pairs: List[Any] = MISSING  # [[image class, target class], ...]
    filter_predicted: Any = MISSING  # null | a class
    start: Any = MISSING  # predicted | label | a class
    targets: List[Any] = MISSING
    target_strategy: str = ranged(choices=("second_most_likely", "nearest_text", "true_label", "wordnet_cluster"),
                                  example="second_most_likely")
    num_targets: int = ranged(minimum=1, example=1)
    image_list: Optional[str] = MISSING  # dig_in | a CSV
    p2p: P2PSchema = field(default_factory=P2PSchema)


#: task name -> schema, stored as ``schema/task/<name>`` and named first in the task file's defaults.
TASK_SCHEMAS: dict[str, type] = {
    "disagreement": DisagreementSchema, "sample": SampleSchema, "explain": ExplainSchema,
    "hard_prompt": HardPromptSchema, "spurious": SpuriousSchema, "neuron": NeuronSchema, "neuron_cf": NeuronCfSchema,
    "npca": NpcaSchema, "vce": VceSchema,
}
#: fields typed by a nested schema (annotations are strings here: ``from __future__ import annotations``)
NESTED = {"MetaSchema": MetaSchema, "InversionSchema": InversionSchema, "P2PSchema": P2PSchema}
