"""The API's scalar defaults are the config groups' values: a method built without arguments behaves as the CLI's
task with its shipped YAML (the real-image settings are compared in test_real_images.py)."""

from __future__ import annotations

import dataclasses

import pytest

import digin_cli as digin
from digin_cli.api.builders import preset

# API field -> task key, where the names differ
RENAMED = {"template": "prompt_template", "seed": "seeds"}


@pytest.mark.parametrize("cls,task,names", [
    (digin.NeuronVisualiser, "neuron", ["template", "object_samples", "keep_until", "mask_steps"]),
    (digin.SpuriousFinder, "spurious", ["delta", "num_samples", "seed", "feature_weight", "prefix", "num_tokens",
                                        "init"]),
    (digin.Disagreement, "disagreement", ["prompt"]),
])
def test_api_defaults_equal_the_shipped_task_values(cls, task, names):
    node = preset("task", task)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in names:
        value = node[RENAMED.get(name, name)]
        if name == "seed":
            value = list(value)[0]  # spurious optimises one seed per item: the list's first
        assert defaults[name] == value, (cls.__name__, name, defaults[name], value)
