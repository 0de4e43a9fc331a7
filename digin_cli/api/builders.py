"""Builders with keyword arguments: the CLI's components without a config node on the caller's side.

Each composes the named preset of ``conf/`` (the same files ``generator=``, ``classifier=``, ``segmentation=``
choose, so their defaults cannot drift) with Hydra's compose API, applies the keyword arguments as overrides of that
node, and hands it to the loader the CLI uses (:func:`~digin_cli.generation.models.load_generator`,
:func:`~digin_cli.classifiers.build_classifier`, :func:`~digin_cli.segmentation.build_segmenter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from digin_cli import schemas
from digin_cli.api.common import argument_names
from digin_cli.configs import CONF_DIR, options, register
from digin_cli.device import resolve_device, resolve_dtype
from digin_cli.errors import DiginError, suggest


def preset(group: str, name: str, **overrides: Any) -> DictConfig:
    """The ``conf/<group>/<name>.yaml`` node as the CLI composes it (defaults lists included), with ``overrides``
    (keys of that node, a dict for a sub-node; unknown ones are refused in one line)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    available = options(group)
    if name not in available:
        raise DiginError(f"unknown {group} '{name}'{suggest(name, available)} — choose one of: "
                         f"{', '.join(available)}")
    register()
    outer = GlobalHydra.instance()
    saved = outer.hydra if outer.is_initialized() else None  # a caller's own Hydra app keeps its state
    outer.clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="digin"):
            cfg = compose("config", overrides=[f"{group}={name}"])
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)
    OmegaConf.resolve(cfg)  # interpolations (paths.*) need the whole config
    typed = cfg[group]
    unknown = [k for k in overrides if k not in typed]
    if unknown:
        raise DiginError(f"{group} '{name}' has no option {', '.join(unknown)} — its options: "
                         f"{', '.join(k for k in typed if not str(k).startswith('_'))}")
    try:  # merged into the schema-typed node: a dict updates a sub-node (augment={"num": 2}), a type is checked
        typed = OmegaConf.merge(typed, overrides)
    except ValidationError as err:
        raise DiginError(schemas.type_error(err) or f"{group} '{name}': {str(err).splitlines()[0]}") from None
    schemas.check(OmegaConf.create({group: typed}))  # ranges and choices, as the CLI's pre-flight
    return OmegaConf.create(OmegaConf.to_container(typed))


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(str(device))


def load_generator(name: str = "sd15", *, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu",
                   lora: str | None = None, sampler: str | None = None, cache_dir: str | None = None,
                   **settings: Any):
    """A :class:`~digin_cli.generation.models.StableDiffusion` from a ``conf/generator`` preset (``sd15``, ``tiny``,
    ``lcm_lora``, ...) or from any SD 1.x diffusers folder or hub id (the ``sd15`` preset with that ``pretrained``).

    ``lora`` (hub id, folder or ``tiny``) is fused into the UNet; ``sampler`` is ``ddim`` or ``lcm``; ``settings``
    override the preset (``num_steps``, ``guidance_scale``, ``resolution``, ``seed``). The chosen sampler is kept on
    the generator (``sampler_name``): the method classes build it from there.
    """
    from digin_cli.generation.models import load_generator as build

    settings.update({k: v for k, v in (("lora", lora), ("sampler", sampler)) if v is not None})
    device = _device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(str(dtype), device)
    with argument_names(group="generator"):  # the preset's schema checks the keywords too (sampler=euler: one line)
        if name in options("generator"):
            cfg = preset("generator", name, **settings)
        else:  # a folder or hub id of any SD 1.x model
            cfg = preset("generator", "sd15", **settings)
            cfg.pretrained, cfg.name = str(name), str(name)
        gen = build(cfg, device, torch_dtype, cache_dir=cache_dir or str(_cache_dir()))
    gen.sampler_name = str(cfg.get("sampler", "ddim"))
    return gen


def load_classifier(name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    two_stage: bool = True, **settings: Any):
    """A :class:`~digin_cli.classifiers.Classifier` from a ``conf/classifier`` preset (``convnext_b``, ``vit_b``,
    ``tiny_a``, ...) or a family with settings: ``load_classifier("hf", pretrained="nateraw/food")``,
    ``load_classifier("timm", name="resnet50.a1_in1k")``. ``settings`` override the preset's keys.

    ``two_stage`` is the optimiser's backward split; ``grad_checkpointing: auto`` follows it (as in the CLI).
    """
    from digin_cli.classifiers import build_classifier

    with argument_names(group="classifier"):
        return build_classifier(preset("classifier", name, **settings), _device(device), dtype, two_stage=two_stage)


def wrap_classifier(module: torch.nn.Module, class_names: str | Sequence[str], input_size: int | Sequence[int],
                    mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic", *,
                    features_layer: str | None = None, device: str | torch.device = "cpu"):
    """Any ``nn.Module`` mapping normalised ``(B,3,H,W)`` images to logits as a digin classifier.

    ``class_names``: a list, a names file, a JSON list / mapping or ``imagenet``; ``input_size`` / ``mean`` / ``std``
    / ``interpolation``: the preprocessing the model was trained with (images enter in [0, 1]); ``features_layer``:
    the module whose output is the feature vector (default: the input of the last linear layer), for neuron methods.
    """
    from digin_cli.classifiers.torch_module import TorchModuleClassifier

    with argument_names(group="classifier"):  # the probe batch of prepare() checks the names against the logits
        clf = TorchModuleClassifier(module, class_names, input_size, list(mean), list(std), interpolation,
                                    features_layer=features_layer).to(device=_device(device))
        clf.prepare()
    return clf


def load_segmenter(name: str = "sam_hq", *, device: str | torch.device = "cpu", **settings: Any):
    """A segmenter from a ``conf/segmentation`` preset (``sam_hq``, ``sam``, ``grounded_sam``, ``attention``, ``none``,
    ``tiny_sam``, ...); ``settings`` override its keys (``pretrained=`` a local folder, ``num_points``, ...)."""
    from digin_cli.segmentation import build_segmenter

    with argument_names(group="segmentation"):
        return build_segmenter(preset("segmentation", name, **settings), _device(device))


def settings_from(opt: DictConfig):
    """An ``optimizer`` config node as (:class:`~digin_cli.optimize.OptimSettings`, :class:`~digin_cli.augment.Cutouts`
    without its random source), as the CLI's run context reads it."""
    from digin_cli.augment import Cutouts
    from digin_cli.optimize.settings import optim_settings

    return optim_settings(opt), Cutouts(**{k: v for k, v in opt.augment.items() if k != "chunk"})


def optimizer_settings(name: str = "adam", **overrides: Any):
    """The settings of a ``conf/optimizer`` preset (``adam``: DiG-IN; ``prompt``: DiffExplainer's soft prompts;
    ``hard_prompt``) with ``overrides`` of its keys (``steps=50``, ``lr=0.1``): ``(OptimSettings, Cutouts)``."""
    return settings_from(preset("optimizer", name, **overrides))


def _cache_dir():
    """``paths.cache_dir`` as the CLI resolves it (``DIGIN_CACHE`` or ~/.cache/digin)."""
    return preset("paths", "default").cache_dir
