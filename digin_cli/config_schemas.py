"""Structured schemas of the config groups, registered in Hydra's ConfigStore: a group file names its schema first in
its ``defaults:`` (``- /schema/optimizer@_here_``), so a value of the wrong type or a mistyped key fails while the
config composes, and a schema field's metadata states the range a type cannot express. Each number, choice and key is
stated once here and checked once (:func:`check`, from ``check_config``); a failure is one line naming the key, what
it must be and an example (the schema's default). Torch-free: the CLI pre-flight imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from digin_cli.errors import DiginError


def _range(default, minimum: float | None = None, above: bool = False, example=None, choices: tuple = ()):
    """A field whose value must lie in a range (``minimum``, strict when ``above``) or among ``choices``."""
    meta = {"minimum": minimum, "above": above, "example": default if example is None else example,
            "choices": choices}
    return field(default=default, metadata=meta)


def expected(kind: type, minimum: float | None = None, above: bool = False, optional: bool = False) -> str:
    """What a number must be, in words: "an integer >= 0", "a positive integer", "a number > 0"."""
    bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"
    words = f"{'an integer' if kind is int else 'a number'}{bound}"
    if kind is int and minimum == 0:
        words = "a positive integer" if above else "an integer >= 0"
    return f"{words} or null" if optional else words


def number(value: Any, key: str, kind: type, minimum: float | None = None, above: bool = False,
           optional: bool = False, example: Any = "1") -> float | int | None:
    """``value`` as an int or float, or a DiginError naming ``key``, the expected type and range."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int and isinstance(value, float):
        ok = value.is_integer()
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if not ok:
        raise DiginError(f"{key} must be {expected(kind, minimum, above)}, got {value!r} — pass e.g. "
                         f"{key}={_text(example)}")
    return kind(value)


@dataclass
class AugmentSchema:
    """Random cutouts for the classifier loss (DiG-IN Sec. 3: the authors' 16 views)."""

    num: int = _range(16, 0)
    power: float = _range(0.3, 0, above=True)
    noise_sd: float = _range(0.005, 0)
    chunk: int = _range(4, 1)


@dataclass
class OptimizerSchema:
    """The ``optimizer`` group (conf/optimizer/adam.yaml holds the authors' values and says what each key does)."""

    steps: int = _range(20, 0)
    lr: float = _range(0.01, 0, above=True)
    latent_lr_factor: float = _range(0.1, 0)
    cond_lr_factor: float = _range(1.0, 0)
    uncond_lr_factor: float = _range(1.0, 0)
    optimize_latent: bool = True
    optimize_cond: bool = True
    optimize_uncond: bool = True
    per_step_deltas: bool = True
    loss_steps: int = _range(3, 1)
    grad_clip: Optional[float] = _range(None, 0, above=True, example=1.0)
    checkpointing: Any = _range(True, choices=(True, False, "auto"), example="auto")  # bool | "auto"
    memory_budget_gb: Optional[float] = _range(None, 0, example=40)
    two_stage: bool = True
    compile: Any = False  # bool | a torch.compile backend: configs.check_config asks torch._dynamo which exist
    fresh_latent: bool = False
    select: str = _range("best", choices=("best", "last"))
    keep_images_every: int = _range(1, 1)
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    optimizer: Any = field(default_factory=lambda: {"_target_": "torch.optim.Adam", "_partial_": True})


@dataclass
class GeneratorSchema:
    """The ``generator`` group: a Stable Diffusion 1.x pipeline and its sampler (conf/generator/sd15.yaml)."""

    name: str = "sd15"
    source: str = _range("pretrained", choices=("pretrained", "tiny", "random_sd15"))
    pretrained: Optional[str] = None
    seed: int = 0  # the random generators' weights (tiny, sd15_random); pretrained ones ignore it
    num_steps: int = _range(20, 0, above=True)
    guidance_scale: float = _range(3.0, 1.0)
    sampler: str = _range("ddim", choices=("ddim", "lcm"))
    lora: Optional[str] = None
    resolution: int = _range(512, 0, above=True)


_NESTED = {"AugmentSchema": AugmentSchema}  # a field typed by a schema: its keys are checked the same way
#: group -> schema; each is stored as ``schema/<group>`` and named by every file of the group.
SCHEMAS: dict[str, type] = {"optimizer": OptimizerSchema, "generator": GeneratorSchema}


def register() -> None:
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group="schema", name=group, node=schema)


def check(cfg: DictConfig) -> None:
    """Keys a group's schema does not know (added with ``+``), and every range and choice its fields state."""
    for group, schema in SCHEMAS.items():
        node = cfg.get(group)
        if node is not None:
            _check_node(node, schema, group)


def _check_node(node: DictConfig, schema: type, path: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {path}.{close[0]}?)" if close else ""
            raise DiginError(f"{path} has no option {key}{hint} — drop it; its options: {', '.join(fields)}")
    for name, spec in fields.items():
        key, value = f"{path}.{name}", node.get(name)
        if spec.type in _NESTED:
            _check_node(value, _NESTED[spec.type], key)
            continue
        meta = spec.metadata
        if meta.get("choices"):
            # `is` for true / false: 1 == True, but checkpointing=1 is no choice
            if not any(value is c or (isinstance(c, str) and value == c) for c in meta["choices"]):
                options = ", ".join(_text(c) for c in meta["choices"])
                raise DiginError(f"{key} must be one of {options}, got {_text(value)} — pass e.g. "
                                 f"{key}={_text(meta['example'])}")
        elif "minimum" in meta:
            number(value, key, int if _base(spec) == "int" else float, meta["minimum"], meta["above"],
                   optional=spec.type.startswith("Optional"), example=meta["example"])


def _base(spec: dataclasses.Field) -> str:
    """A field's type name without Optional (annotations are strings here: ``from __future__ import annotations``)."""
    return spec.type.removeprefix("Optional[").removesuffix("]")


def _text(value: Any) -> str:
    """A value as it is written on the command line (true, null, auto)."""
    if value is None or isinstance(value, bool):
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def type_error(err: Exception) -> str | None:
    """The one line for a composition error of a value that its schema's type refuses (``optimizer.steps=abc``), or
    None for any other error: the same words as a range error of that key."""
    cause = err.__cause__ or err
    key = getattr(cause, "full_key", None)
    if not key or "." not in str(key) or key.split(".")[0] not in SCHEMAS:
        return None
    spec = _field(str(key))
    if spec is None:
        return None
    value, meta, kind = getattr(cause, "value", None), spec.metadata, _base(spec)
    if kind == "bool":
        words, example = "true or false", spec.default
    elif kind in ("int", "float"):
        words = expected(int if kind == "int" else float, meta.get("minimum"), meta.get("above", False))
        example = meta.get("example", spec.default)
    else:
        return None
    return f"{key} must be {words}, got {value!r} — pass e.g. {key}={_text(example)}"


def _field(key: str) -> dataclasses.Field | None:
    parts = key.split(".")
    schema = SCHEMAS[parts[0]]
    for n, part in enumerate(parts[1:]):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            return None
        if n == len(parts) - 2:
            return fields[part]
        schema = _NESTED.get(fields[part].type)
        if schema is None:
            return None
    return None
