"""The job wrapper: one Hydra job from config to status.json.

Whatever happens, a job leaves its resolved ``config.yaml`` and a ``status.json`` (running at start, then ok / failed
/ interrupted, error text, seconds, peak memory, config hash) in its output folder and finishes W&B, so sequential
multiruns never log into each other's runs. A folder whose status.json holds another config hash is refused, never
resumed. User errors (:class:`DiginError`) become one line on stderr and exit code 2; other exceptions keep
their traceback in ``error.log`` and exit 1. In a multirun a failed job is recorded and the sweep goes on; a job
whose folder already holds ``status: ok`` with the same config hash is never run again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from digin_cli.configs import check_config, config_hash
from digin_cli.device import peak_memory_mb, reset_peak_memory, resolve_device, resolve_dtype, seed_everything
from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_json, atomic_write_text
from digin_cli.tasks import item_keys


def previous_status(output_dir: Path) -> dict | None:
    try:
        return json.loads((output_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def run(cfg: DictConfig, output_dir: str | Path, overrides: Sequence[str] = (), sweep_dir: str | Path | None = None,
        exit_on_error: bool = True) -> dict:
    """Run the task of ``cfg`` (no ``hydra`` node) in ``output_dir`` and record how it went.

    ``overrides`` are the command line's (for W&B); ``sweep_dir`` is the sweep's folder when the job is one of a
    multirun (None: a single run). The Hydra entry point (:mod:`digin_cli.cli`) reads these from ``HydraConfig``;
    :func:`run_task` composes them itself. A failed single run exits with its code unless ``exit_on_error`` is False
    (then the status says why).
    """
    output_dir = Path(output_dir)
    multirun = sweep_dir is not None
    digest = config_hash(cfg)
    # Same config but for which items run (more classes, seeds, images): the job runs again, finished items are reused.
    items_digest = config_hash(cfg, item=True, item_keys=item_keys(str(cfg.task.name)))
    previous = previous_status(output_dir)
    if previous is not None and previous.get("config_hash") != digest:
        if previous.get("items_hash") != items_digest:
            return _refuse(output_dir, previous, digest, multirun, exit_on_error)
        previous = None
    if previous and previous.get("status") == "ok":
        print(f"digin: {output_dir} already completed; not running it again", file=sys.stderr)
        if "refused" in previous:  # a refusal of another config is settled once the folder's own config ran again
            previous.pop("refused")
            atomic_write_json(output_dir / "status.json", previous)
        return previous

    status: dict = {"status": "running", "task": cfg.task.name, "output_dir": str(output_dir), "config_hash": digest,
                    "items_hash": items_digest,
                    "host": socket.gethostname(), "pid": os.getpid(),
                    **{k.lower(): os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID") if k in os.environ}}
    start = time.perf_counter()
    job = _Job()
    try:
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        # Written first: a job killed by SLURM (timeout, preemption, OOM) or SIGKILL leaves 'running' behind, which
        # the sweep summary reports as incomplete.
        atomic_write_json(output_dir / "status.json", status)
        status.update(_execute(cfg, output_dir, list(overrides), Path(sweep_dir or output_dir), job))
    except DiginError as err:
        status.update(status="failed", error=str(err))
        print(f"digin: error: {err}", file=sys.stderr)
        job.exit_code = 2
    except KeyboardInterrupt:
        status.update(status="interrupted", error="interrupted by the user")
        job.exit_code = 130
    except Exception as err:  # a bug: keep the traceback, but in the job log, not on the user's screen
        atomic_write_text(output_dir / "error.log", traceback.format_exc())
        status.update(status="failed", error=f"{type(err).__name__}: {err}")
        print(f"digin: internal error: {type(err).__name__}: {err} (traceback in {output_dir / 'error.log'})",
              file=sys.stderr)
        job.exit_code = 1
    finally:
        status["seconds"] = round(time.perf_counter() - start, 3)
        if job.device is not None:
            status["peak_memory_mb"] = round(peak_memory_mb(job.device), 1)
        atomic_write_json(output_dir / "status.json", status)  # before W&B, which must not be able to prevent it
        if job.tracker is not None:
            try:
                job.tracker.finish(exit_code=job.exit_code)
            except Exception as err:  # the job's results are written; a W&B hiccup must not turn them into a crash
                print(f"digin: warning: could not finish the W&B run ({type(err).__name__}: {err})", file=sys.stderr)
        _write_pages(cfg, output_dir, Path(sweep_dir) if multirun else None)
    if job.exit_code and not multirun and exit_on_error:
        sys.exit(job.exit_code)
    return status


def _refuse(output_dir: Path, previous: dict, digest: str, multirun: bool, exit_on_error: bool = True) -> dict:
    """Never resume a folder holding results of another configuration: its items would be returned as if they
    were this config's. Nothing of the folder is changed but a note in status.json that the sweep summary reads."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    message = (f"{output_dir} holds a run of a different configuration (config hash "
               f"{previous.get('config_hash') or 'missing'}, this one {digest}) — pass a new {key}= to keep both, "
               "or delete that folder")
    print(f"digin: error: {message}", file=sys.stderr)
    if not multirun and exit_on_error:
        sys.exit(2)
    if not multirun:
        return {**previous, "status": "refused", "error": message}
    atomic_write_json(output_dir / "status.json", {**previous, "refused": message})
    return {**previous, "status": "refused", "error": message}


def _write_pages(cfg: DictConfig, output_dir: Path, sweep_dir: Path | None) -> None:
    """The job's report.html (and, in a sweep, the sweep's page so far); never fails the job."""
    from digin_cli.io import report
    from digin_cli.tasks import key_images

    report.refresh(lambda: report.write_report(output_dir, key_images(str(cfg.task.name))))
    if sweep_dir is not None:
        report.refresh(report.write_sweep_report, sweep_dir)


class _Job:
    """What run's ``finally`` must close or measure, filled in as the job gets going."""

    tracker = None
    device = None
    exit_code = 0


def _execute(cfg: DictConfig, output_dir: Path, overrides: list[str], group_dir: Path, job: _Job) -> dict:
    from digin_cli.context import RunContext
    from digin_cli.io.tracking import Tracker
    from digin_cli.io.writer import Writer
    from digin_cli.tasks import get_task

    check_config(cfg)
    task = get_task(cfg.task.name)
    job.device = device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    reset_peak_memory(device)
    seed_everything(int(cfg.seed))
    job.tracker = tracker = Tracker(
        mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
        group=cfg.logger.group or group_dir.name, tags=list(cfg.logger.tags),
        name=f"{cfg.task.name}-{output_dir.name}", job_type=cfg.task.name, dir=str(output_dir),
        config={**OmegaConf.to_container(cfg, resolve=True), "overrides": overrides},
        lazy=True)  # started by run_items, once the task has checked its inputs
    ctx = RunContext(cfg, output_dir, device, dtype, Writer(output_dir), tracker)
    summary = task(ctx) or {}
    return {"status": "ok", **summary}
