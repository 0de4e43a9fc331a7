"""Schemas of the primary config (conf/config.yaml: the run's own keys beside the groups) and of ``paths``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from digin_cli.schemas.fields import ranged


@dataclass
class PathsSchema:
    """conf/paths/default.yaml: where runs, caches and the ImageNet folders are."""

    output_root: str = MISSING
    cache_dir: str = MISSING
    imagenet_val: Optional[str] = MISSING
    imagenet_train: Optional[str] = MISSING


@dataclass
class RootSchema:
    """conf/config.yaml's own keys; each group's node is typed by its own schema (``Any`` here)."""

    seed: int = ranged(example=0)
    device: str = MISSING  # auto | cpu | cuda | cuda:<n>: device.resolve_device says which exist here
    dtype: str = ranged(choices=("fp32", "fp16", "bf16"), example="bf16")
    safety: bool = MISSING
    safety_checker: str = MISSING
    paths: Any = MISSING
    generator: Any = MISSING
    classifier: Any = MISSING
    classifier2: Any = MISSING
    optimizer: Any = MISSING
    segmentation: Any = MISSING
    captioner: Any = MISSING
    task: Any = MISSING
    logger: Any = MISSING
