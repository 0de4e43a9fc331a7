"""Which words name the object a neuron counterfactual holds (DiG-IN Sec. 6, neuron_cf / npca).

The caption names the start class; the object's mask comes from the cross-attention of a few of its words. The
authors (``imagenet_neuron_counterfactuals.py``, ``foreground_replacements``) take the head noun for the classes in
their table ('fiddler crab' -> 'crab', 'great white shark' -> 'shark', ...) and every word of the class name
otherwise. Their captions use their own ImageNet names; where those differ from ours for a class of the table
(index 83: ours 'prairie grouse', theirs 'prairie chicken'), the caption uses
theirs, so the mask word ('chicken') is in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from digin_cli.classifiers.classnames import is_imagenet
from digin_cli.errors import DiginError

# The authors' table (M4xim4l/DiG-IN, src/imagenet_neuron_counterfactuals.py, ``foreground_replacements``).
FOREGROUND_REPLACEMENTS = {
    "fiddler crab": "crab",
    "prairie chicken": "chicken",
    "howler monkey": "monkey",
    "great white shark": "shark",
    "American alligator": "alligator",
    "house finch": "finch",
}
# Their table also maps 'bullfrog' -> 'frog', which is no whole word of 'bullfrog' (nor of our 'American bullfrog'):
# its mask would select no token of the caption, so that class keeps its whole name here.

# The authors' ImageNet names (their utils/datasets/inet_classes.py) for table classes whose names differ from ours.
AUTHORS_IMAGENET_NAMES = {83: "prairie chicken"}


def caption_name(class_names: Sequence[str], index: int) -> str:
    """The class name the caption uses: ours, or the authors' for ImageNet classes of their table."""
    if index in AUTHORS_IMAGENET_NAMES and is_imagenet(class_names):
        return AUTHORS_IMAGENET_NAMES[index]
    return class_names[index]


def mask_words(name: str, override: str | Mapping | None = None) -> str:
    """The words whose attention makes the object's mask: ``task.mask_words`` (one string for every image, or a
    ``{class name: words}`` mapping) when it covers ``name``, else the authors' head noun, else the whole name.
    The words must occur in the name, since the caption starts with "an image of a <name>"."""
    if isinstance(override, Mapping):
        override = next((str(v) for k, v in override.items() if str(k).lower() == name.lower()), None)
    words = str(override).strip() if override else FOREGROUND_REPLACEMENTS.get(name, name)
    if not re.search(rf"(?<!\w){re.escape(words)}(?!\w)", name, re.IGNORECASE):
        raise DiginError(f"task.mask_words '{words}' does not occur in the class name '{name}' that the caption "
                         f"starts with — pass words of the name, e.g. task.mask_words='{name.split()[-1]}', or leave "
                         "task.mask_words unset")
    return words
