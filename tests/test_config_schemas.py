"""The structured schemas (digin_cli/schemas/): every file of every group composes into its schema, a value of the
wrong type fails while composing, a key the schema lacks or a value out of its range fails in check_config, and
each failure is one line naming the key, what it must be and an example. One refused override per schema."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose
from hydra.errors import HydraException
from omegaconf import OmegaConf

from digin_cli.schemas import GROUPS, STORED, type_error
from digin_cli.schemas.sampling import GeneratorSchema, OptimizerSchema
from digin_cli.configs import check_config, options
from digin_cli.errors import DiginError


pytestmark = pytest.mark.usefixtures("hydra_dir")  # tests/conftest.py: compose from conf/


def refusal(*overrides: str, hydra: bool = False) -> str:
    """The one line the CLI pre-flight prints for these overrides (``hydra``: composed as the CLI does, with the
    chosen options' names, and without the demo's task values)."""
    try:
        check_config(compose("config", overrides=[*overrides] if hydra else ["experiment=demo", *overrides],
                             return_hydra_config=hydra))
    except HydraException as err:
        line = type_error(err)
        assert line, f"not a schema's type error: {err}"
        return line
    except DiginError as err:
        return str(err)
    raise AssertionError(f"{overrides} passed")


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "classifier2"])
def test_every_file_of_a_group_composes_into_its_schema(group):
    from digin_cli.schemas.root import RootSchema

    assert OmegaConf.get_type(compose("config")) is RootSchema
    import digin_cli.schemas.tasks as tasks

    for option in options(group):
        node = compose("config", overrides=[f"{group}={option}"])[group]
        schema = OmegaConf.get_type(node)
        assert schema in STORED.values(), (group, option)
        assert set(node) == {f.name for f in dataclasses.fields(schema)}, option  # nothing the schema lacks
        if group == "task":
            assert schema is tasks.TASK_SCHEMAS[option] and not OmegaConf.missing_keys(node), option  # all filled
        if group in ("classifier", "segmentation", "captioner") and "_target_" in node:
            # the file's class is the schema's: the schema states that class's options
            assert node._target_ == next(f.default for f in dataclasses.fields(schema) if f.name == "_target_")
    for task in options("task"):  # the groups tasks choose for themselves (explain: prompt, lcm_lora) too
        assert OmegaConf.get_type(compose("config", overrides=[f"task={task}"])[group]) in STORED.values()


@pytest.mark.parametrize("path", [p for p in STORED if p.split("/")[0] in ("classifier", "segmentation", "captioner")])
def test_a_component_schema_states_exactly_its_classes_keyword_arguments(path):
    # Replaces reading __init__ from source: the schema is the list of options, checked against the class here.
    import inspect

    from hydra.utils import get_class

    fields = {f.name: f for f in dataclasses.fields(STORED[path])}
    if "_target_" not in fields:
        return  # segmentation / captioner "none": nothing is instantiated
    params = inspect.signature(get_class(fields["_target_"].default)).parameters
    accepts_more = any(p.kind is p.VAR_KEYWORD for p in params.values())
    given = {name for name in fields if not name.startswith("_")}
    if not accepts_more:
        assert given <= set(params), given - set(params)
    # what the builders pass themselves (device, cache folders) is not an option; every other argument is
    passed_by_builder = {"device", "cache_dir"}
    assert {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - passed_by_builder <= given


@pytest.mark.parametrize("overrides,words", [
    # one refusal per schema: a type (while composing), a range or choice, or a key it does not know
    (["task=disagreement", "task.seeds=[a]"], "task.seeds must be a list of integers, got 'a' in it — pass e.g."),
    (["task=sample", "+task.prompt=x"], "task 'sample' has no option prompt (did you mean task.prompts?) — remove"),
    (["task=explain", "task.num_tokens=0"], "task.num_tokens must be an integer >= 1, got 0"),
    (["task=hard_prompt", "task.tau=0"], "task.tau must be a number > 0, got 0.0"),
    (["task=spurious", "task.delta=1.5"], "task.delta must be a number in [0, 1], got 1.5"),
    (["task=neuron", "task.direction=up"], "task.direction must be one of max, min, both, got up"),
    (["task=neuron_cf", "task.inversion.inner_steps=x"], "task.inversion.inner_steps must be an integer >= 0, "
                                                         "got 'x'"),
    (["task=npca", "task.component=-1"], "task.component must be an integer >= 0, got -1"),
    (["task=vce", "task.crop_fraction=1.5"], "task.crop_fraction must be a number in (0, 1], got 1.5 — pass e.g. "
                                             "task.crop_fraction=0.8"),
    (["task=vce", "task.p2p.blends=[a]"], "task.p2p.blends must be a list of numbers, got 'a' in it"),
    (["task=vce", "+task.meta.images=[]"], "task.meta has no option images"),
    (["task=vce", "task.target_strategy=closest"], "task.target_strategy must be one of second_most_likely, "
                                                   "nearest_text, true_label, wordnet_cluster, got closest"),
    (["classifier=convnext_b", "classifier.pretrained=maybe"], "classifier.pretrained must be true or false, got "
                                                                "'maybe'"),
    (["classifier=hf", "classifier.interpolation=cubic"], "classifier.interpolation must be one of null, bilinear, "
                                                          "bicubic, nearest, got cubic"),
    (["classifier=torch_module", "classifier.std=[a]"], "classifier.std must be a list of numbers, got 'a' in it"),
    (["classifier=clip_vit_b16_zeroshot", "classifier.templates=fancy"], "classifier.templates must be one of "
                                                                          "openai, simple, got fancy"),
    (["classifier2=tiny_b", "classifier2.width=0"], "classifier2.width must be an integer >= 1, got 0"),
    (["segmentation=attention", "segmentation.threshold=2"], "segmentation.threshold must be a number in [0, 1]"),
    (["segmentation=sam_hq", "segmentation.variant=mobile"], "segmentation.variant must be one of sam_hq, sam"),
    (["segmentation=grounded_sam", "segmentation.masks=polygons"], "segmentation.masks must be one of sam, boxes"),
    (["segmentation=none", "+segmentation.threshold=0.3"], "segmentation 'none' has no option threshold"),
    (["captioner=hf", "captioner.max_tokens=100"], "captioner.max_tokens must be an integer in [8, 75], got 100"),
    (["captioner=none", "+captioner.model=x"], "captioner 'none' has no option model"),
    (["logger=offline", "logger.mode=off"], "logger.mode must be one of online, offline, disabled, got off"),
    (["dtype=fp8"], "dtype must be one of fp32, fp16, bf16, got fp8 — pass e.g. dtype=bf16"),
    (["seed=x"], "seed must be an integer, got 'x' — pass e.g. seed=0"),
    (["+sede=1"], "the config has no option sede (did you mean seed?) — remove +sede"),
    (["+paths.imagenet=/data"], "paths 'default' has no option imagenet (did you mean paths.imagenet_val?)"),
])
def test_each_schema_refuses_in_one_line(overrides, words):
    line = refusal(*overrides, hydra=True)
    assert words in line and "\n" not in line and " — " in line, line


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
    ("+optimizer.lrr=0.1", "optimizer has no option lrr (did you mean optimizer.lr?) — remove +optimizer.lrr"),
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
