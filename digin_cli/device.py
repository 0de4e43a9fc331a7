"""Device, dtype, seeding and memory accounting for a job."""

from __future__ import annotations

import hashlib
import random
import resource
import sys

import torch

from digin_cli.errors import DiginError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu with a one-line warning; ``cuda`` without CUDA is an error."""
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("digin: warning: no CUDA device found, running on CPU (slow for real models)", file=sys.stderr)
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DiginError(f"device={name} was asked for but CUDA is not available here — use device=cpu or "
                             "device=auto, or run on a machine with an NVIDIA GPU and a CUDA build of torch")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DiginError(f"unknown device '{name}' — use device=auto, device=cpu or device=cuda")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The generator's dtype; half precision is refused on CPU where its kernels are missing or slow."""
    if str(name) not in DTYPES:
        raise DiginError(f"unknown dtype '{name}' — use dtype=fp32, dtype=fp16 or dtype=bf16")
    dtype = DTYPES[str(name)]
    if device.type == "cpu" and dtype == torch.float16:
        raise DiginError("dtype=fp16 needs a GPU — use dtype=fp32 (or bf16) on CPU")
    return dtype


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional for torch
        pass


def item_seed(seed: int, key: str) -> int:
    """A seed for one item from the run's ``seed`` and the item's key (its path relative to the job folder).

    A stable hash, not Python's salted ``hash``: the same item gets the same seed in every process, whichever items
    ran before it in the job, so a resumed or sharded sweep reproduces a fresh one.
    """
    digest = hashlib.sha256(f"{int(seed)}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
