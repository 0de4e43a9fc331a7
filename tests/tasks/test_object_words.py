"""The object a neuron counterfactual holds, as the authors name it: start class from the label when there is one,
mask words from their head-noun table (imagenet_neuron_counterfactuals.py), class 83 captioned 'prairie chicken'."""

from __future__ import annotations

import types

import pytest
import torch

from digin_cli.classifiers.classnames import imagenet_class_names
from digin_cli.errors import DiginError
from digin_cli.captioning.object_words import caption_name, mask_words
from digin_cli.tasks.common.real_images import start_class


def test_captions_use_the_authors_names_and_masks_their_head_nouns():
    names = imagenet_class_names()
    assert names[83] == "prairie grouse"  # ours (open_clip) differ from the authors' for class 83 ...
    assert caption_name(names, 83) == "prairie chicken"  # ... so the caption uses theirs, which holds 'chicken'
    expected = {120: "crab", 83: "chicken", 2: "shark", 50: "alligator", 30: "American bullfrog", 12: "finch", 379: "monkey"}
    for index, word in expected.items():
        assert mask_words(caption_name(names, index)) == word, index
    assert caption_name(names, 1) == "goldfish" and mask_words("goldfish") == "goldfish"  # not in the table
    assert mask_words("hermit crab") == "hermit crab"  # the authors' fallback: every word of the name
    assert caption_name(["a", "b"] * 42, 83) == "b"  # another label set keeps its own names


def test_mask_words_override():
    assert mask_words("fiddler crab", "fiddler crab") == "fiddler crab"
    assert mask_words("fiddler crab", {"fiddler crab": "fiddler"}) == "fiddler"
    assert mask_words("great white shark", {"fiddler crab": "fiddler"}) == "shark"  # unmapped: the default
    with pytest.raises(DiginError, match="task.mask_words 'bird' does not occur in the class name 'prairie chicken'"):
        mask_words("prairie chicken", "bird")


def test_start_is_the_label_when_known_else_the_prediction():
    task = types.SimpleNamespace(start="auto")
    probs = torch.tensor([0.1, 0.7, 0.2])
    labelled = types.SimpleNamespace(label=2, path="val/n2/x.JPEG")
    unlabelled = types.SimpleNamespace(label=None, path="crab.png")
    assert start_class(task, None, labelled, probs) == 2  # not the prediction (1)
    assert start_class(task, None, unlabelled, probs) == 1
    task.start = "predicted"
    assert start_class(task, None, labelled, probs) == 1
