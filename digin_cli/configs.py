"""Config registration shared by the CLI and the tests: the ``classifier2`` group and digin's resolvers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

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


def check_config(cfg: DictConfig) -> None:
    """Cheap checks on values that would otherwise fail deep inside a job (also run by the CLI pre-flight)."""
    if int(cfg.generator.num_steps) <= 0:
        raise DiginError(f"generator.num_steps must be a positive integer, got {cfg.generator.num_steps}")
    if int(cfg.optimizer.steps) < 0:
        raise DiginError(f"optimizer.steps must be >= 0, got {cfg.optimizer.steps}")
    if int(cfg.optimizer.loss_steps) < 1:
        raise DiginError(f"optimizer.loss_steps must be >= 1, got {cfg.optimizer.loss_steps}")
    opt = cfg.optimizer
    if opt.get("checkpointing", True) not in (True, False, "auto"):
        raise DiginError(f"optimizer.checkpointing must be true, false or auto, got {opt.checkpointing}")
    if opt.get("memory_budget_gb") is not None and float(opt.memory_budget_gb) < 0:
        raise DiginError(f"optimizer.memory_budget_gb must be >= 0 or null, got {opt.memory_budget_gb}")
    if int(opt.augment.get("chunk", 1)) < 1:
        raise DiginError(f"optimizer.augment.chunk must be >= 1, got {opt.augment.chunk}")
    if float(cfg.generator.guidance_scale) < 1.0:
        raise DiginError(f"generator.guidance_scale must be >= 1, got {cfg.generator.guidance_scale}")
    if cfg.generator.get("sampler", "ddim") not in ("ddim", "lcm"):
        raise DiginError(f"unknown generator.sampler '{cfg.generator.sampler}' — use generator.sampler=ddim or lcm")
    if cfg.optimizer.get("select", "best") not in ("best", "last"):
        raise DiginError(f"unknown optimizer.select '{cfg.optimizer.select}' — use optimizer.select=best or last")
    if int(cfg.optimizer.get("keep_images_every", 1)) < 1:
        raise DiginError(f"optimizer.keep_images_every must be >= 1, got {cfg.optimizer.keep_images_every}")
