"""Hydra callbacks: a sweep-level summary of every job's status and of every job's items."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


#: Jobs of the last multirun in this process whose status is not ok; the CLI turns it into the exit code.
failed_jobs: list[str] = []


def expected_jobs(config: DictConfig) -> list[str]:
    """Folder names of every job the sweep launches (``hydra.sweep.subdir`` is the job number by default).

    Hydra's basic sweep is the cartesian product of the swept overrides, so a job that never started (or died before
    writing anything) is still accounted for. Empty when the user changed ``subdir`` (then only existing job folders
    are read).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if subdir != "${hydra.job.num}":
        return []
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    count = math.prod(len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override())
    return [str(n) for n in range(count)]


def job_row(folder: Path) -> dict:
    """One job's line of the sweep table, from its own ``status.json``.

    Submitit reports jobs as completed even when they failed inside, and a job killed by SLURM or SIGKILL reports
    nothing at all; the job's own status file is the only reliable account. Missing or still ``running`` (written
    at job start) means the job was killed or never ran: ``incomplete``.
    """
    try:
        status = json.loads((folder / "status.json").read_text())
    except FileNotFoundError:
        status = {"status": "incomplete", "error": "no status.json: the job never started or was killed at once"}
    except (OSError, ValueError):
        status = {"status": "unreadable"}
    state = status.get("status")
    error = status.get("error", "")
    if state == "running":
        state, error = "incomplete", "still 'running': killed (timeout, preemption, out of memory) or still going"
    if status.get("refused"):
        state, error = "refused", status["refused"]
    return {"job": folder.name, "status": state, "seconds": status.get("seconds"), "error": error}


class SweepSummary(Callback):
    """After a multirun, gather each job's status into ``sweep_status.csv`` and a table on the terminal, and every
    job's ``summary.csv`` rows (with a ``job`` column) into the sweep's ``summary.csv``: the shards of a sharded
    task (``task.shard_index='range(8)' task.num_shards=8``) read back as one table.

    A job that failed, was refused, or is incomplete makes ``digin -m`` exit with status 1 once the sweep is over;
    re-running the same command with the same ``hydra.sweep.dir=`` completes what is missing and redoes nothing.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from digin_cli.io.progress import print_table
        from digin_cli.io.writer import Writer

        sweep = Path(config.hydra.sweep.dir)
        names = set(expected_jobs(config)) | {p.parent.name for p in sweep.glob("*/status.json")}
        rows = [job_row(sweep / name) for name in sorted(names, key=lambda n: (len(n), n))]
        if rows:
            Writer(sweep).write_summary(rows, "sweep_status.csv")
            print_table(f"sweep {sweep}", rows)
            items = [{"job": r["job"], **item} for r in rows for item in Writer(sweep / r["job"]).read_summary()]
            if items:
                Writer(sweep).write_summary(items)
        failed_jobs[:] = [r["job"] for r in rows if r["status"] != "ok"]
        from digin_cli.io import report

        report.refresh(report.write_sweep_report, sweep)
