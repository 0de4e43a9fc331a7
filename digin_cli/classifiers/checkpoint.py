"""Loading user-supplied classifier weights (robust models are not on any hub).

Checkpoints arrive in many wrappings: a bare state dict, ``{'model': ...}`` or ``{'state_dict': ...}`` training
checkpoints, DataParallel ``module.`` prefixes, and the robustness library's Madry checkpoints whose keys look like
``module.model.conv1.weight`` next to a duplicate ``module.attacker.model.*`` copy and ``module.normalizer.*``
statistics. This module reduces all of them to the plain state dict of the bare network.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from digin_cli.errors import DiginError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_STRIP_PREFIXES = ("module.", "model.")
# The attacker holds a second copy of the weights; the normaliser is applied by our own preprocessing.
_DROP_PREFIXES = ("attacker.", "normalizer.")


def _read(path: Path, trusted: bool) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:  # pickle errors have many types; the fix is the same
        if trusted:
            raise DiginError(f"cannot read classifier checkpoint {path}: {str(e).splitlines()[0]}") from e
        raise DiginError(
            f"cannot read classifier checkpoint {path} as plain tensors ({type(e).__name__}) — convert it to a"
            " state dict / .safetensors, or, only if you trust the file, pass classifier.trusted_checkpoint=true"
        ) from e


def _unwrap(obj: object) -> Mapping[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DiginError("classifier checkpoint holds no state dict of tensors — check classifier.checkpoint=")
    return obj


def _strip(key: str, prefix: str) -> str:
    """``key`` without ``prefix``; a ``_metadata`` module key equal to the bare prefix name is the root ''."""
    return key[len(prefix):] if key.startswith(prefix) else ("" if key == prefix[:-1] else key)


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and drop adversarial-training leftovers.

    The state dict's ``_metadata`` (per-module versions, which torch's loaders read to upgrade old formats, e.g.
    BatchNorm's missing ``num_batches_tracked``) follows the same renaming, so the strict load decides as it would
    on the unwrapped network.
    """
    out: dict[str, torch.Tensor] = OrderedDict()
    meta = dict(getattr(state, "_metadata", None) or {})
    for key, value in state.items():
        # DataParallel wraps every key, so stripping it per key is safe.
        while key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(_DROP_PREFIXES):
            continue
        out[key] = value
    for _ in range(8):  # nested DataParallel wrappers; a few levels at most
        meta = {_strip(k, "module."): v for k, v in meta.items()}
    meta = {k: v for k, v in meta.items() if not (k + ".").startswith(_DROP_PREFIXES)}
    # 'model.' is only a wrapper when every key carries it; per key it could be a real submodule name.
    while out:
        prefix = next((p for p in _STRIP_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = OrderedDict((k[len(prefix) :], v) for k, v in out.items())
        meta = {_strip(k, prefix): v for k, v in meta.items() if k.startswith(prefix) or k == prefix[:-1]}
    if meta:
        out._metadata = meta  # type: ignore[attr-defined]
    return out


def load_state_dict_file(path: str | os.PathLike, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read ``path`` (.safetensors or a torch checkpoint) into a clean state dict of the bare network.

    ``trusted`` allows full unpickling, which can run code from the file; off by default.
    """
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DiginError(f"classifier checkpoint not found: {p} — pass an existing file as classifier.checkpoint=")
    return clean_state_dict(_unwrap(_read(p, trusted)))


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … (+{len(keys) - n})" if len(keys) > n else "")


def _incompatible(message: str) -> list[str]:
    """torch's strict-load error text -> short parts (missing / unexpected / shape keys, or its own first line)."""
    quoted = lambda line: re.findall(r'"([^"]+)"', line)  # noqa: E731
    missing = [k for line in message.splitlines() if "Missing key(s)" in line for k in quoted(line)]
    unexpected = [k for line in message.splitlines() if "Unexpected key(s)" in line for k in quoted(line)]
    shape = re.findall(r"size mismatch for ([^:\s]+):", message)
    parts = [f"{label}: {_few(keys)}" for label, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shape)) if keys]
    if not parts:  # a module's own loader complained about something else
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        parts = [" ".join(lines[1:2] or lines[:1])[:300]]
    return parts


def load_into(model: nn.Module, path: str | os.PathLike, trusted: bool = False,
              fix: str = "check that classifier.name matches the checkpoint's architecture") -> None:
    """Load ``path`` into ``model`` exactly when ``model.load_state_dict(strict=True)`` accepts it.

    torch decides (its loaders fill what older formats lack, e.g. BatchNorm's ``num_batches_tracked``); its error
    becomes a user error naming a few offending keys and ``fix``.
    """
    state = load_state_dict_file(path, trusted=trusted)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DiginError(
            f"classifier checkpoint {path} does not fit the {type(model).__name__} architecture "
            f"({'; '.join(_incompatible(str(e)))}) — {fix}"
        ) from None


def is_download_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means 'the weights could not be fetched' rather than a bug."""
    hub_errors: tuple[type[BaseException], ...] = (OSError,)
    try:
        from huggingface_hub.errors import HfHubHTTPError

        hub_errors += (HfHubHTTPError,)
    except ImportError:  # older huggingface_hub layouts; OSError still covers the offline cases
        pass
    try:
        import httpx

        hub_errors += (httpx.HTTPError,)
    except ImportError:
        pass
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, hub_errors):
            return True
        text = str(e).lower()
        # open_clip re-raises hub failures as a bare RuntimeError carrying only the text.
        if any(w in text for w in ("download", "offline", "local cache", "connection", "resolve host")):
            return True
        e = e.__cause__ or e.__context__
    return False
