"""Config registration shared by the CLI and the tests: the ``classifier2`` group and digin's resolvers."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from digin_cli.config_checks import check_inputs
from digin_cli.errors import DiginError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("task", "generator", "classifier", "classifier2", "optimizer", "segmentation", "captioner", "logger",
          "experiment", "paths")


def register() -> None:
    """Idempotently register what plain YAML folders cannot express.

    ``classifier2`` takes exactly the names of the ``classifier`` group (``classifier2=vit_s``), so its options are
    the classifier files themselves, stored once more under the second group instead of duplicated on disk.
    """
    store = ConfigStore.instance()
    for path in sorted((CONF_DIR / "classifier").glob("*.yaml")):
        store.store(group="classifier2", name=path.stem, node=OmegaConf.load(path))
    if not OmegaConf.has_resolver("digin_uid"):
        # One short random id per process, cached, so a run's folder name is fixed once resolved.
        uid = f"{os.getpid() % 100000:05d}{secrets.token_hex(2)}"
        OmegaConf.register_new_resolver("digin_uid", lambda: uid, use_cache=True)


def options(group: str) -> list[str]:
    """The config names a group offers."""
    folder = CONF_DIR / ("classifier" if group == "classifier2" else group)
    return sorted(p.stem for p in folder.glob("*.yaml"))


#: Top-level config keys that cannot change a result: where files go and where metrics are logged. Hydra's own node
#: (launcher, run / sweep folders) is not part of a job's config at all.
_NOT_RESULTS = ("paths", "logger", "safety", "safety_checker")  # the safety check records, never changes, results
#: Keys that choose which items a job runs, not what an item computes (they count for a job, not for an item).
SHARD_KEYS = ("shard_index", "num_shards")


def config_hash(cfg: DictConfig, item: bool = False, item_keys: tuple[str, ...] | list[str] = ()) -> str:
    """A short hash of the resolved config minus paths, logger and launcher settings: equal hashes mean a stored
    result is a result of this config, so a resumed sweep may reuse it. For ``item``, the sharding keys and the
    task's ``item_keys`` (those that only choose which items run) are left out too: an item's folder names it.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_RESULTS + ("hydra",):
        plain.pop(key, None)
    if item and isinstance(plain.get("task"), dict):
        for key in (*SHARD_KEYS, *item_keys):
            plain["task"].pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _number(cfg: DictConfig, key: str, kind: type, minimum: float | None = None, above: bool = False,
            optional: bool = False, example: str = "1") -> float | int | None:
    """``cfg[key]`` as an int or float, or a DiginError naming the key, the expected type and range."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None and optional:
        return None
    bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"
    expected = f"{'an integer' if kind is int else 'a number'}{bound}"
    if kind is int and minimum == 0:
        expected = "a positive integer" if above else "an integer >= 0"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int and isinstance(value, float):
        ok = value.is_integer()
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if not ok:
        raise DiginError(f"{key} must be {expected}, got {value!r} — pass e.g. {key}={example}")
    return kind(value)


def _int_list(cfg: DictConfig, key: str) -> None:
    values = OmegaConf.select(cfg, key, throw_on_missing=False)
    if values is None:
        return
    items = list(values) if OmegaConf.is_list(values) or isinstance(values, (list, tuple)) else [values]
    for v in items:
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            raise DiginError(f"{key} must be a list of integers, got {v!r} in it — pass e.g. {key}='[0,1]'")


def check_config(cfg: DictConfig) -> None:
    """Cheap checks on values that would otherwise fail deep inside a job (also run by the CLI pre-flight).

    Every number a user may override on the command line is checked for its type and range here, so that
    ``optimizer.steps=abc`` or ``optimizer.lr=0`` is one line naming the key, not a traceback minutes later.
    """
    _number(cfg, "seed", int, example="0")
    _number(cfg, "generator.num_steps", int, 0, above=True, example="20")
    _number(cfg, "generator.guidance_scale", float, 1.0, example="3.0")
    resolution = _number(cfg, "generator.resolution", int, 0, above=True, example="512")
    if resolution % 8:
        raise DiginError(f"generator.resolution must be a positive multiple of 8, got {resolution} — pass e.g. "
                         "generator.resolution=512")
    _number(cfg, "optimizer.steps", int, 0, example="20")
    _number(cfg, "optimizer.loss_steps", int, 1, example="3")
    _number(cfg, "optimizer.lr", float, 0, above=True, example="0.01")
    for factor in ("latent_lr_factor", "cond_lr_factor", "uncond_lr_factor"):
        _number(cfg, f"optimizer.{factor}", float, 0, example="1.0")
    _number(cfg, "optimizer.grad_clip", float, 0, above=True, optional=True, example="1.0")
    _number(cfg, "optimizer.augment.num", int, 0, example="16")
    _number(cfg, "optimizer.augment.power", float, 0, above=True, example="0.3")
    _number(cfg, "optimizer.augment.noise_sd", float, 0, example="0.005")
    _number(cfg, "task.images_per_class", int, 1, optional=True, example="1")
    _number(cfg, "task.num_targets", int, 1, optional=True, example="1")
    # task=neuron (object choice, keep_object, real images)
    for key, low in (("object_samples", 1), ("auto_images", 1), ("max_objects", 1), ("top_images", 0)):
        _number(cfg, f"task.{key}", int, low, optional=True, example="8")
    until = _number(cfg, "task.keep_until", float, 0, optional=True, example="0.3")
    if until is not None and until > 1:
        raise DiginError(f"task.keep_until is a fraction of the steps in [0, 1], got {until} — pass e.g. "
                         "task.keep_until=0.3")
    if OmegaConf.select(cfg, "task.keep_object", throw_on_missing=False) not in (None, True, False):
        raise DiginError(f"task.keep_object must be true or false, got {cfg.task.keep_object!r} — pass e.g. "
                         "task.keep_object=true")
    _int_list(cfg, "task.seeds")
    _number(cfg, "task.tau", float, 0, above=True, optional=True, example="2.0")  # hard prompts' temperature
    _number(cfg, "task.tau_end", float, 0, above=True, optional=True, example="0.5")
    _int_list(cfg, "task.indices")
    num_shards = _number(cfg, "task.num_shards", int, 1, optional=True, example="8")
    shard = _number(cfg, "task.shard_index", int, 0, optional=True, example="0")
    if num_shards is not None and shard is not None and shard >= num_shards:
        raise DiginError(f"task.shard_index must be below task.num_shards ({num_shards}), got {shard} — pass e.g. "
                         f"task.shard_index='range({num_shards})' with -m")
    if cfg.get("safety", False) not in (True, False):
        raise DiginError(f"safety must be true or false, got {cfg.safety} — pass e.g. safety=true (Stable "
                         "Diffusion's safety checker over every item's images)")
    opt = cfg.optimizer
    if opt.get("checkpointing", True) not in (True, False, "auto"):
        raise DiginError(f"optimizer.checkpointing must be true, false or auto, got {opt.checkpointing} — pass e.g. "
                         "optimizer.checkpointing=auto")
    for key in ("classifier", "classifier2"):
        node = cfg.get(key)
        if node is not None and node.get("grad_checkpointing", False) not in (True, False, "auto"):
            raise DiginError(f"{key}.grad_checkpointing must be true, false or auto, got {node.grad_checkpointing} — "
                             f"pass e.g. {key}.grad_checkpointing=auto")
    compile = opt.get("compile", False)
    if not isinstance(compile, (bool, str)) or (isinstance(compile, str) and compile not in _compile_backends()):
        raise DiginError(f"optimizer.compile must be true, false or a torch.compile backend, got {compile} — pass "
                         "e.g. optimizer.compile=true (inductor)")
    _number(cfg, "optimizer.memory_budget_gb", float, 0, optional=True, example="40")
    _number(cfg, "optimizer.augment.chunk", int, 1, optional=True, example="4")
    if cfg.generator.get("sampler", "ddim") not in ("ddim", "lcm"):
        raise DiginError(f"unknown generator.sampler '{cfg.generator.sampler}' — use generator.sampler=ddim or lcm")
    if cfg.optimizer.get("select", "best") not in ("best", "last"):
        raise DiginError(f"unknown optimizer.select '{cfg.optimizer.select}' — use optimizer.select=best or last")
    _number(cfg, "optimizer.keep_images_every", int, 1, optional=True, example="1")
    sampling = OmegaConf.select(cfg, "segmentation.point_sampling", default=None)
    if sampling is not None and sampling not in ("authors", "spread"):
        raise DiginError(f"unknown segmentation.point_sampling '{sampling}' — use segmentation.point_sampling=authors "
                         "(the paper's rule) or spread")
    check_precision(cfg)
    check_inputs(cfg)


NO_GRADIENT_TASKS = ("sample",)
"""Tasks that never backpropagate; every other task optimises through the sampler (and vce inverts images)."""


def check_precision(cfg: DictConfig) -> None:
    """fp16 is refused wherever gradients flow: without loss scaling, DiG-IN's gradients through 20 UNet steps and
    null-text inversion's (1e-6 to 1e-7) fall into fp16's subnormal range and results degrade silently. bf16 has
    fp32's exponent range (tested end to end); fp16 stays available for plain sampling."""
    if str(cfg.dtype) == "fp16" and str(cfg.task.name) not in NO_GRADIENT_TASKS:
        raise DiginError(f"dtype=fp16 cannot backpropagate safely for task={cfg.task.name} (gradients of 1e-7 "
                         "underflow in fp16) — use dtype=bf16 (fp32's range, half the memory) or dtype=fp32")


def _compile_backends() -> list[str]:
    import torch._dynamo  # only when a backend is named: importing dynamo costs about a second

    return torch._dynamo.list_backends(exclude_tags=())
