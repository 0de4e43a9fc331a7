"""Structured schemas of the config groups, registered in Hydra's ConfigStore as ``schema/<group>[/<name>]``.

Each group file names its schema first in its ``defaults:`` (``- /schema/task/vce@_here_``), so a value of the wrong
type fails while the config composes; a schema field's metadata states the range or the choices a type cannot
express, and :func:`check` (called by ``configs.check_config``) enforces them together with the keys a schema does
not know (``+classifier.bogus=1``: Hydra's ``+`` adds a key even to a typed node). Every failure is one line naming
the key, what it must be and an example. Torch-free: the CLI pre-flight imports it.

- :mod:`~digin_cli.schemas.fields`: ranges, choices and their words;
- :mod:`~digin_cli.schemas.sampling`: ``optimizer``, ``generator``;
- :mod:`~digin_cli.schemas.tasks`: one schema per task, built from the fragments of conf/task/common/;
- :mod:`~digin_cli.schemas.components`: ``classifier`` / ``classifier2``, ``segmentation``, ``captioner``, ``logger``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from digin_cli.errors import DiginError
from digin_cli.schemas.components import COMPONENT_SCHEMAS
from digin_cli.schemas.fields import expected, number, text
from digin_cli.schemas.root import PathsSchema, RootSchema
from digin_cli.schemas.sampling import AugmentSchema, GeneratorSchema, OptimizerSchema
from digin_cli.schemas.tasks import NESTED as _TASK_NESTED
from digin_cli.schemas.tasks import TASK_SCHEMAS

#: ConfigStore path (under ``schema/``) -> schema
STORED: dict[str, type] = {
    "config": RootSchema, "paths": PathsSchema, "optimizer": OptimizerSchema, "generator": GeneratorSchema,
    **{f"task/{name}": schema for name, schema in TASK_SCHEMAS.items()},
    **{f"{group}/{name}": schema for (group, name), schema in COMPONENT_SCHEMAS.items()},
}
#: the config keys whose nodes are typed by a schema (classifier2 takes the classifier schemas)
GROUPS = ("task", "generator", "classifier", "classifier2", "optimizer", "segmentation", "captioner", "logger",
          "paths")
_NESTED = {"AugmentSchema": AugmentSchema, **_TASK_NESTED}  # a field typed by a schema: its keys checked the same
_ALL = set(STORED.values()) | set(_NESTED.values())


def register() -> None:
    store = ConfigStore.instance()
    for path, schema in STORED.items():
        group, _, name = f"schema/{path}".rpartition("/")
        store.store(group=group, name=name, node=schema)


def check(cfg: DictConfig) -> None:
    """Keys a group's schema does not know (added with ``+``), and every range and choice its fields state."""
    if OmegaConf.get_type(cfg) is RootSchema:  # the run's own keys; each group node has its own schema below
        _check_node(cfg, RootSchema, "")
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) in _ALL:
            choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
            _check_node(node, OmegaConf.get_type(node), group, choice)


def _check_node(node: DictConfig, schema: type, path: str, choice: str | None = None) -> None:
    """``path`` "" is the primary config (its ``hydra`` node is Hydra's own)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields and not (path == "" and key == "hydra"):
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {_join(path, close[0])}?)" if close else ""
            name = f"{path} '{choice}'" if choice else path or "the config"
            options = ", ".join(f for f in fields if not f.startswith("_"))
            raise DiginError(f"{name} has no option {key}{hint} — remove +{_join(path, key)} (its options: "
                             f"{options})")
    for name, spec in fields.items():
        if OmegaConf.is_missing(node, name):
            continue  # a ??? the user must fill: Hydra names it when the job reads it
        key, value = _join(path, name), node.get(name)
        if spec.type in _NESTED:
            _check_node(value, _NESTED[spec.type], key)
            continue
        meta = spec.metadata
        if meta.get("choices"):
            # `is` for true / false: 1 == True, but checkpointing=1 is no choice
            if not any(value is c or (isinstance(c, str) and value == c) for c in meta["choices"]):
                options = ", ".join(text(c) for c in meta["choices"])
                raise DiginError(f"{key} must be one of {options}, got {text(value)} — pass e.g. "
                                 f"{key}={text(meta['example'])}")
        elif meta.get("minimum") is not None or meta.get("maximum") is not None:
            number(value, key, int if _base(spec) == "int" else float, meta["minimum"], meta["above"],
                   optional=_optional(spec), example=meta["example"], maximum=meta["maximum"])


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _optional(spec: dataclasses.Field) -> bool:
    return spec.type.startswith("Optional[") or spec.type.endswith("| None")


def _base(spec: dataclasses.Field) -> str:
    """A field's type name without Optional (annotations are strings here: ``from __future__ import annotations``)."""
    if spec.type.endswith("| None"):
        return spec.type.removesuffix("| None").strip()
    return spec.type.removeprefix("Optional[").removesuffix("]") if spec.type.startswith("Optional[") else spec.type


def type_error(err: Exception) -> str | None:
    """The one line for a composition error of a value that its schema's type refuses (``optimizer.steps=abc``,
    ``task.seeds=[a]``), or None for any other error: the same words as a range error of that key."""
    cause = err.__cause__ or err
    key = str(getattr(cause, "full_key", "") or "")
    element = re.match(r"^(.*?)(?:\[\d+\]|\.\d+)$", key)  # an element of a typed list: task.seeds[0]
    field_key = element.group(1) if element else key
    schema = _owner(cause, field_key)
    if schema is None:
        return None
    spec = {f.name: f for f in dataclasses.fields(schema)}.get(field_key.rsplit(".", 1)[-1])
    if spec is None:
        return None
    value, meta, kind = getattr(cause, "value", None), spec.metadata, _base(spec)
    if kind.startswith("List["):
        inner = kind.removeprefix("List[").removesuffix("]")
        words = {"int": "integers", "float": "numbers", "str": "strings"}.get(inner)
        if words is None:
            return None
        example = {"int": "'[0,1]'", "float": "'[0.3,0.5]'", "str": "'[a,b]'"}[inner]
        got = f"{value!r} in it" if element else repr(value)
        return f"{field_key} must be a list of {words}, got {got} — pass e.g. {field_key}={example}"
    if kind == "bool":
        words, example = "true or false", spec.default if isinstance(spec.default, bool) else "true"
    elif kind in ("int", "float"):
        words = expected(int if kind == "int" else float, meta.get("minimum"), meta.get("above", False),
                         maximum=meta.get("maximum"))
        example = meta.get("example", spec.default)
    else:
        return None
    return f"{field_key} must be {words}, got {value!r} — pass e.g. {field_key}={text(example)}"


def _owner(cause: Exception, key: str) -> type | None:
    """The schema that declares ``key``'s last part: the error's own object type, else (a list element's error) the
    schema of the group node, found by the field's path from any stored schema that has it."""
    owner = getattr(cause, "object_type", None)
    if owner in _ALL and key.rsplit(".", 1)[-1] in {f.name for f in dataclasses.fields(owner)}:
        return owner
    parts = key.split(".")
    if not parts or parts[0] not in GROUPS:
        return None
    for schema in STORED.values():  # the first schema with this path: list types agree across tasks (seeds etc.)
        found = _walk(schema, parts[1:])
        if found is not None:
            return found
    return None


def _walk(schema: type, parts: list[str]) -> type | None:
    for n, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            return None
        if n == len(parts) - 1:
            return schema
        schema = _NESTED.get(fields[part].type)
        if schema is None:
            return None
    return None


__all__ = ["GROUPS", "STORED", "check", "expected", "number", "register", "text", "type_error"]
