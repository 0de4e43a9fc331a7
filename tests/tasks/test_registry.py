"""The task registry: names, and each task's KEY_IMAGES read from source exactly as the module defines it."""

from importlib import import_module

import pytest

from digin_cli.errors import DiginError
from digin_cli.tasks import TASKS, get_task, key_images


@pytest.mark.parametrize("name", TASKS)
def test_key_images_read_from_source_match_the_module(name):
    module = import_module(f"digin_cli.tasks.{name}")
    assert key_images(name) == getattr(module, "KEY_IMAGES", None)


def test_named_key_images_and_unknown_tasks():
    assert key_images("disagreement") == ["init.png", "best.png"]
    assert key_images("vce")[-1] == "counterfactual.png"
    assert key_images("nope") is None and key_images(None) is None
    with pytest.raises(DiginError, match="disagreement"):
        get_task("disagrement")
