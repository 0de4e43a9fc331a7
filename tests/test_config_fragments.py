"""conf/ states each shared block once: task files compose fragments (conf/task/common/) with `defaults:`, the timm
presets extend conf/classifier/base/timm.yaml, optimizer/prompt extends adam."""

from __future__ import annotations

import re

from hydra import compose

from digin_cli.configs import CONF_DIR, options, register

RUN = 3  # identical consecutive key lines two task files may not share


def key_lines(text: str) -> list[str]:
    """The ``key: value`` lines of a YAML file, comments, blank lines and the ``defaults:`` list dropped (naming the
    same fragment is the point, not a copy)."""
    lines, in_defaults = [], False
    for line in text.splitlines():
        code = re.sub(r"\s+#.*$", "", line).rstrip()
        if not code.strip() or code.lstrip().startswith("#"):
            continue
        if not code.startswith(" "):
            in_defaults = code == "defaults:"
        if not in_defaults:
            lines.append(code)
    return lines


def shared_runs(a: list[str], b: list[str], length: int) -> list[list[str]]:
    runs = {tuple(a[i:i + length]) for i in range(len(a) - length + 1)}
    return [list(b[i:i + length]) for i in range(len(b) - length + 1) if tuple(b[i:i + length]) in runs]


def test_key_lines_and_runs_find_a_copied_block():
    a = key_lines("defaults:\n  - common/sharding@_here_\n  - _self_\nname: x\nshard_index: 0   # a\nnum_shards: 1\ncrop_fraction: 0.8\n# note\n")
    b = key_lines("defaults:\n  - common/sharding@_here_\n  - _self_\nname: y\nshard_index: 0\n\nnum_shards: 1   # b\ncrop_fraction: 0.8\n")
    assert a[1:] == b[1:] and shared_runs(a, b, RUN) == [["shard_index: 0", "num_shards: 1", "crop_fraction: 0.8"]]
    assert shared_runs(a, b, RUN + 1) == []


def test_no_block_is_repeated_across_task_files():
    files = sorted((CONF_DIR / "task").glob("*.yaml"))
    assert len(files) == len(options("task")) >= 9
    lines = {path.stem: key_lines(path.read_text()) for path in files}
    copies = [(x, y, run) for i, x in enumerate(lines) for y in list(lines)[i + 1:]
              for run in shared_runs(lines[x], lines[y], RUN)]
    assert not copies, f"blocks copied between task files (move them into conf/task/common/): {copies}"


def test_no_block_is_repeated_across_timm_presets_and_optimizers():
    groups = [[p for p in (CONF_DIR / "classifier").glob("*.yaml") if "base/timm@_here_" in p.read_text()],
              sorted((CONF_DIR / "optimizer").glob("*.yaml"))]
    assert len(groups[0]) >= 10  # timm.yaml and its presets
    for files in groups:
        lines = {path.stem: key_lines(path.read_text()) for path in files}
        for i, x in enumerate(lines):
            for y in list(lines)[i + 1:]:
                assert not shared_runs(lines[x], lines[y], RUN), (x, y)


def test_fragments_fill_every_task_and_the_task_file_wins(hydra_dir):
    for task in options("task"):
        cfg = compose("config", overrides=[f"task={task}"]).task
        assert cfg.name == task and cfg.shard_index == 0 and cfg.num_shards == 1
        assert "seed" not in cfg and [int(s) for s in cfg.seeds] if "seeds" in cfg else True
    assert compose("config", overrides=["task=hard_prompt"]).task.prefix == "a picture of"  # over common/prompt's ""
    assert compose("config", overrides=["task=explain"]).task.prefix == ""
    assert compose("config", overrides=["task=neuron_cf"]).task.top_k == 1  # over common/neurons' 3
    vce = compose("config", overrides=["task=vce"]).task
    assert list(vce.p2p.injections) == [0.3, 0.4, 0.5] and vce.start == "predicted" and "cutouts" not in vce
    npca = compose("config", overrides=["task=npca"]).task
    assert list(npca.p2p.injections) == [0.3] and npca.start == "auto" and npca.crop_fraction == 0.8
    assert compose("config", overrides=["task=spurious"]).task.seeds == [0]


def test_prompt_optimizer_extends_adam_and_presets_extend_the_timm_base(hydra_dir):
    prompt = compose("config", overrides=["optimizer=prompt"]).optimizer
    adam = compose("config", overrides=["optimizer=adam"]).optimizer
    assert prompt.optimizer._target_ == "torch.optim.AdamW" and prompt.optimizer._partial_ is True
    assert prompt.augment.power == adam.augment.power and prompt.augment.chunk == adam.augment.chunk
    assert prompt.steps == 200 and adam.steps == 20 and prompt.cond_lr_factor == adam.cond_lr_factor
    timm = compose("config", overrides=["classifier=timm"]).classifier
    for preset in ("convnext_b", "vit_b", "robust_resnet50"):
        for group in ("classifier", "classifier2"):
            node = compose("config", overrides=[f"{group}={preset}"])[group]
            assert set(node) == set(timm) and node.grad_checkpointing == timm.grad_checkpointing == "auto"
    # a preset's own `checkpoint: ???` survives the base's null (OmegaConf never merges ??? over a value)
    from omegaconf import OmegaConf
    assert OmegaConf.is_missing(compose("config", overrides=["classifier=robust_vit_s"]).classifier, "checkpoint")


def test_help_lists_the_groups_users_choose_from_not_the_fragments():
    from omegaconf import OmegaConf

    register()
    listing = OmegaConf.create({"groups": "${digin_groups:}"}).groups
    assert "task: disagreement, explain" in listing and "classifier2: " in listing
    assert "common" not in listing and "base" not in listing and "schema" not in listing
    assert "${digin_groups:}" in (CONF_DIR / "hydra" / "help" / "digin.yaml").read_text()
