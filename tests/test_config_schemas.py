"""The structured schemas (digin_cli/config_schemas.py): every file of a group composes into its schema, a value of
the wrong type fails while composing, a key the schema lacks or a value out of its range fails in check_config, and
each failure is one line naming the key, what it must be and an example."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose
from hydra.errors import HydraException
from omegaconf import OmegaConf

from digin_cli.config_schemas import SCHEMAS, GeneratorSchema, OptimizerSchema, type_error
from digin_cli.configs import check_config, options
from digin_cli.errors import DiginError


pytestmark = pytest.mark.usefixtures("hydra_dir")  # tests/conftest.py: compose from conf/


def refusal(*overrides: str) -> str:
    """The one line the CLI pre-flight prints for these overrides."""
    try:
        check_config(compose("config", overrides=["experiment=demo", *overrides]))
    except HydraException as err:
        line = type_error(err)
        assert line, f"not a schema's type error: {err}"
        return line
    except DiginError as err:
        return str(err)
    raise AssertionError(f"{overrides} passed")


@pytest.mark.parametrize("group", list(SCHEMAS))
def test_every_file_of_a_schema_group_composes_into_the_schema(group):
    for option in options(group):
        node = compose("config", overrides=[f"{group}={option}"])[group]
        assert OmegaConf.get_type(node) is SCHEMAS[group], option
        assert set(node) == {f.name for f in dataclasses.fields(SCHEMAS[group])}, option
    for task in options("task"):  # the groups tasks choose for themselves (explain: prompt, lcm_lora) too
        assert OmegaConf.get_type(compose("config", overrides=[f"task={task}"])[group]) is SCHEMAS[group]


@pytest.mark.parametrize("override,words", [
    ("optimizer.steps=abc", "optimizer.steps must be an integer >= 0, got 'abc' — pass e.g. optimizer.steps=20"),
    ("optimizer.steps=2.5", "optimizer.steps must be an integer >= 0, got 2.5"),
    ("optimizer.lr=fast", "optimizer.lr must be a number > 0, got 'fast' — pass e.g. optimizer.lr=0.01"),
    ("optimizer.two_stage=maybe", "optimizer.two_stage must be true or false, got 'maybe' — pass e.g. "
                                  "optimizer.two_stage=true"),
    ("optimizer.augment.num=many", "optimizer.augment.num must be an integer >= 0, got 'many'"),
    ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0.0"),
    ("optimizer.augment.chunk=0", "optimizer.augment.chunk must be an integer >= 1, got 0"),
    ("optimizer.grad_clip=-1", "optimizer.grad_clip must be a number > 0, got -1.0"),
    ("optimizer.select=first", "optimizer.select must be one of best, last, got first — pass e.g. optimizer.select=best"),
    ("optimizer.checkpointing=maybe", "optimizer.checkpointing must be one of true, false, auto, got maybe"),
    ("optimizer.checkpointing=1", "optimizer.checkpointing must be one of true, false, auto, got 1"),
    ("+optimizer.lrr=0.1", "optimizer has no option lrr (did you mean optimizer.lr?) — drop it"),
])
def test_optimizer_schema(override, words):
    assert words in refusal(override) and "\n" not in refusal(override)
    assert isinstance(OptimizerSchema().augment.num, int)
    ok = compose("config", overrides=["optimizer.grad_clip=1", "optimizer.checkpointing=auto", "optimizer.steps=0",
                                      "+optimizer.optimizer.weight_decay=0.1"])  # torch.optim's own arguments: open
    check_config(ok)
    assert ok.optimizer.grad_clip == 1.0 and isinstance(ok.optimizer.grad_clip, float)


@pytest.mark.parametrize("override,words", [
    ("generator.num_steps=x", "generator.num_steps must be a positive integer, got 'x' — pass e.g. "
                              "generator.num_steps=20"),
    ("generator.num_steps=0", "generator.num_steps must be a positive integer, got 0"),
    ("generator.guidance_scale=0.5", "generator.guidance_scale must be a number >= 1, got 0.5"),
    ("generator.resolution=100", "generator.resolution must be a positive multiple of 8"),
    ("generator.sampler=euler", "generator.sampler must be one of ddim, lcm, got euler"),
    ("generator.source=hub", "generator.source must be one of pretrained, tiny, random_sd15"),
    ("+generator.stepz=3", "generator has no option stepz"),
])
def test_generator_schema(override, words):
    assert words in refusal(override)
    assert GeneratorSchema().sampler == "ddim"
    cfg = compose("config", overrides=["generator=tiny_lcm"])
    check_config(cfg)
    assert cfg.generator.sampler == "lcm" and cfg.generator.lora == "tiny"


def test_a_schema_type_error_is_one_line_from_the_cli(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "digin_cli.cli", "experiment=demo", "optimizer.augment.power=hot",
                           f"paths.output_root={tmp_path}"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "optimizer.augment.power must be a number > 0, got 'hot' — pass e.g. optimizer.augment.power=0.3" in \
        proc.stderr
    assert not list(tmp_path.rglob("*"))
