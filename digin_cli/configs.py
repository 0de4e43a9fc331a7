"""Config registration shared by the CLI and the tests: the ``classifier2`` group and digin's resolvers."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from digin_cli import schemas
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
    schemas.register()
    folder = CONF_DIR / "classifier"
    for path in sorted(folder.rglob("*.yaml")):  # with base/ (the presets' shared keys, named in their defaults)
        group = "/".join(("classifier2", *path.relative_to(folder).parent.parts))
        store.store(group=group, name=path.stem, node=OmegaConf.load(path))
    if not OmegaConf.has_resolver("digin_groups"):
        # `digin --help`: the groups a user chooses from, without the fragments and schemas they compose from.
        OmegaConf.register_new_resolver("digin_groups", lambda: "\n".join(
            f"{group}: {', '.join(options(group))}" for group in sorted(GROUPS)))
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
    if isinstance(plain.get("task"), dict):
        plain["task"].pop("meta", None)  # what the report shows and which keys choose items: never a result
    if item and isinstance(plain.get("task"), dict):
        for key in (*SHARD_KEYS, *item_keys):
            plain["task"].pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_config(cfg: DictConfig) -> None:
    """Cheap checks on values that would otherwise fail deep inside a job (also run by the CLI pre-flight).

    Every group's node is typed by its schema (:mod:`digin_cli.schemas`): a wrong type fails as the config
    composes, and ``schemas.check`` enforces the ranges, the choices and the keys a schema does not know. What is left
    here spans keys: the resolution's multiple of 8, a shard index below the shard count, a torch.compile backend and the
    precision a gradient needs.
    """
    schemas.check(cfg)
    if cfg.generator.resolution % 8:
        raise DiginError(f"generator.resolution must be a positive multiple of 8, got {cfg.generator.resolution} — "
                         "pass e.g. generator.resolution=512")
    num_shards, shard = cfg.task.num_shards, cfg.task.shard_index
    if shard >= num_shards:
        raise DiginError(f"task.shard_index must be below task.num_shards ({num_shards}), got {shard} — pass e.g. "
                         f"task.shard_index='range({num_shards})' with -m")
    compile = cfg.optimizer.compile
    if not isinstance(compile, (bool, str)) or (isinstance(compile, str) and compile not in _compile_backends()):
        raise DiginError(f"optimizer.compile must be true, false or a torch.compile backend, got {compile} — pass "
                         "e.g. optimizer.compile=true (inductor)")
    check_precision(cfg)


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
