"""The task registry: names from conf/task/, each task's metadata from its YAML (``task.meta``), read for a report
from the run's own config.yaml; no task module is imported or parsed."""

import sys
from importlib import import_module

import pytest
from omegaconf import OmegaConf

from digin_cli.errors import DiginError
from digin_cli.task_registry import TASK_DIR, item_keys, meta, run_key_images
from digin_cli.tasks import TASKS, get_task, key_images


def test_tasks_are_the_files_of_conf_task():
    assert TASKS == tuple(sorted(p.stem for p in TASK_DIR.glob("*.yaml"))) and len(TASKS) == 9
    assert "common" not in TASKS  # the fragments' folder is no task


@pytest.mark.parametrize("name", TASKS)
def test_every_task_states_its_metadata_and_the_modules_no_longer_do(name):
    assert isinstance(key_images(name), list) and item_keys(name)
    node = OmegaConf.load(TASK_DIR / f"{name}.yaml")
    assert set(item_keys(name)) <= set(node) | {"seeds", "features", "images", "indices", "image_classes",
                                                "images_per_class", "neurons", "top_features_of", "top_k"}
    module = import_module(f"digin_cli.tasks.{name}")
    assert not hasattr(module, "KEY_IMAGES") and not hasattr(module, "ITEM_KEYS")


def test_named_key_images_and_unknown_tasks():
    assert key_images("disagreement") == ["init.png", "best.png"]
    assert key_images("vce")[-1] == "counterfactual.png"
    assert key_images("sample") == []  # an item is one file: the page shows it, not "all images"
    assert key_images("nope") is None and key_images(None) is None and item_keys("nope") == []
    with pytest.raises(DiginError, match="disagreement"):
        get_task("disagrement")


def test_a_composed_task_node_carries_its_metadata():
    node = OmegaConf.create({"name": "explain", "meta": {"key_images": ["x.png"], "item_keys": ["classes"]}})
    assert key_images(node) == ["x.png"] and item_keys(node) == ["classes"] and meta(node)["item_keys"] == ["classes"]


def test_the_report_reads_a_runs_own_config_without_importing_tasks(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task:\n  name: vce\n  meta: {key_images: [only.png], item_keys: []}\n")
    sys.modules.pop("digin_cli.tasks.vce", None)
    assert run_key_images(run) == ["only.png"]  # what the run was made with, not today's conf/task/vce.yaml
    assert "digin_cli.tasks.vce" not in sys.modules
    (run / "config.yaml").write_text("task:\n  name: vce\n")  # a run from before the metadata moved to the YAML
    assert run_key_images(run) == key_images("vce")
    (run / "config.yaml").unlink()
    (run / "status.json").write_text('{"task": "disagreement"}')
    assert run_key_images(run) == ["init.png", "best.png"]
    assert run_key_images(tmp_path / "missing") is None


def test_metadata_never_enters_a_resume_hash():
    from digin_cli.configs import config_hash

    cfg = OmegaConf.create({"seed": 0, "task": {"name": "sample", "seeds": [0], "meta": {"item_keys": ["seeds"]}}})
    other = OmegaConf.merge(cfg, {"task": {"meta": {"key_images": ["x.png"], "item_keys": ["seeds", "prompts"]}}})
    assert config_hash(cfg) == config_hash(other)
    assert config_hash(cfg, item=True) == config_hash(other, item=True)
    assert config_hash(cfg) != config_hash(OmegaConf.merge(cfg, {"task": {"seeds": [1]}}))


def test_a_path_is_a_run_folder(tmp_path):
    (tmp_path / "config.yaml").write_text("task:\n  name: npca\n")
    assert key_images(tmp_path) == run_key_images(tmp_path) == key_images("npca")
