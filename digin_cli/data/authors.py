"""The DiG-IN authors' ImageNet UVCE set-up, shipped as data (``digin_cli/data/dig_in/``, source in its README).

* :func:`wordnet_cluster` — their WordNet-like groups of ImageNet classes (``in_hierarchy``): a UVCE of an image
  goes to every *other* class of the first group holding its start class (``find_cluster_for_class_idx``), the
  paper's "classes close in the ImageNet hierarchy" (Sec. 5, Fig. 6).
* :func:`uvce_image_list` — their figure's (ImageNet val index, start class, target or None) list
  (``VCE_start_class_target``); None means the start class's cluster.

Both are in ImageNet-1k class indices, so they apply only to classifiers with ImageNet's 1000 classes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

IMAGENET_CLASSES = 1000


def _load(name: str) -> dict:
    return json.loads(resources.files("digin_cli.data").joinpath("dig_in", name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def imagenet_clusters() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The authors' 128 class groups, in their file's order: ``(group name, class indices)``."""
    data = _load("imagenet_clusters.json")["clusters"]
    return tuple((name, tuple(int(idx) for idx, _ in members)) for name, members in data.items())


def wordnet_cluster(class_idx: int) -> tuple[str, list[int]] | None:
    """``(group name, the other classes of the group)`` for the first group holding ``class_idx`` (as the authors'
    ``find_cluster_for_class_idx``: some classes are in two groups, the first wins), or None if no group has it."""
    for name, members in imagenet_clusters():
        if class_idx in members:
            return name, [m for m in members if m != class_idx]
    return None


@lru_cache(maxsize=1)
def uvce_image_list() -> tuple[tuple[int, int, int | None], ...]:
    """The authors' UVCE images: ``(ImageNet val index in ImageFolder order, start class, target or None)``."""
    rows = _load("uvce_image_start_target.json")["VCE_start_class_target"]
    return tuple((int(i), int(s), None if t is None else int(t)) for i, s, t in rows)


__all__ = ["IMAGENET_CLASSES", "imagenet_clusters", "uvce_image_list", "wordnet_cluster"]
