"""What ``digin evaluate`` reads: the counterfactual items of a run folder, or of every job of a sweep folder (a
sharded sweep's shards merge; jobs that differ in other overrides stay apart as "variants")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digin_cli.errors import DiginError
from digin_cli.io.report import is_run_folder, is_sweep_folder, task_of

TASKS = ("vce", "neuron_cf", "npca")  # real image -> counterfactual tasks
COUNTERFACTUAL_NAMES = ("counterfactual.png", "best.png")  # vce wrote both (same image); one name may remain
SHARD_KEYS = ("task.shard_index", "task.num_shards")
_SKIP = {".hydra", "wandb"}


@dataclass
class CounterfactualItem:
    """One finished counterfactual on disk."""

    folder: Path
    job_dir: Path
    job: str  # the job folder's name inside a sweep ("" for a run)
    variant: str  # the job's overrides other than sharding ("" when every job shares them)
    task: str
    metrics: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The item's path inside its job: the same in a sharded sweep as in one run."""
        return self.folder.relative_to(self.job_dir).as_posix()

    @property
    def summary(self) -> dict:
        return self.metrics.get("summary", {}) or {}

    @property
    def start(self) -> str | None:
        return self.metrics.get("start")

    @property
    def target(self) -> str | None:
        return self.metrics.get("target")

    def cost(self, name: str) -> float | None:
        """seconds / peak_memory_mb: vce writes them at the top level, neuron_cf / npca also in the summary."""
        value = self.metrics.get(name, self.summary.get(name))
        return float(value) if isinstance(value, (int, float)) else None


def counterfactual_image(folder: Path) -> Path | None:
    """The item's counterfactual picture, whichever of its names the writing version used."""
    return next((folder / n for n in COUNTERFACTUAL_NAMES if (folder / n).is_file()), None)


def load_image(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def load_mask(folder: Path) -> torch.Tensor | None:
    """The object mask (1, 1, H, W) in [0, 1] (``mask.png``, 1 = object), or None for runs written without it."""
    path = folder / "mask.png"
    if not path.is_file():
        return None
    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255)[None, None]


def jobs_of(folder: Path) -> list[Path]:
    """The run folder itself, or a sweep folder's job folders."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DiginError(f"no folder '{folder}' — pass a run folder (outputs/<task>/runs/<run>) or a sweep folder "
                         "(outputs/<task>/multiruns/<sweep>)")
    if is_run_folder(folder):
        return [folder]
    if is_sweep_folder(folder):
        jobs = sorted((p for p in folder.iterdir() if p.is_dir() and is_run_folder(p)), key=lambda p: p.name)
        if not jobs:
            raise DiginError(f"sweep folder '{folder}' has no job folders yet — wait for its jobs, then re-run")
        return jobs
    raise DiginError(f"'{folder}' is neither a digin run folder (config.yaml, status.json) nor a sweep folder "
                     "(multirun.yaml, sweep_status.csv) — pass the folder digin printed or wrote")


def _overrides(job: Path) -> list[str]:
    import yaml

    try:
        listed = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in listed] if isinstance(listed, list) else []


def collect(folder: Path) -> list[CounterfactualItem]:
    """Every finished item of the vce / neuron_cf / npca jobs under ``folder`` (failed ones are left out)."""
    jobs = jobs_of(folder)
    sweep = len(jobs) > 1 or jobs[0] != Path(folder).expanduser()
    overrides = {job: [o for o in _overrides(job) if not o.lstrip("+~").startswith(SHARD_KEYS)] for job in jobs}
    shared = set.intersection(*map(set, overrides.values())) if overrides else set()
    items, tasks = [], set()
    for job in jobs:
        task = task_of(job)
        tasks.add(task)
        if task not in TASKS:
            continue
        variant = " ".join(o for o in overrides[job] if o not in shared)
        for metrics_file in sorted(job.rglob("metrics.json")):
            folder_ = metrics_file.parent
            if _SKIP & set(folder_.relative_to(job).parts):
                continue
            try:
                metrics = json.loads(metrics_file.read_text())
            except (OSError, ValueError):
                continue
            if metrics.get("error") or not (folder_ / "original.png").is_file() or not counterfactual_image(folder_):
                continue
            items.append(CounterfactualItem(folder_, job, job.name if sweep else "", variant, task, metrics))
    if not items:
        found = ", ".join(sorted(str(t) for t in tasks)) or "none"
        raise DiginError(f"no finished counterfactual in '{folder}' (tasks found: {found}) — digin evaluate reads "
                         f"runs of task={' / '.join(TASKS)} with at least one finished item")
    return sorted(items, key=lambda i: (i.variant, i.key))  # shards interleave: the order of the unsharded run
