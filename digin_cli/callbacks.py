"""Hydra callbacks: a sweep-level summary of every job's status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


#: Jobs of the last multirun in this process whose status is not ok; the CLI turns it into the exit code.
failed_jobs: list[str] = []


class SweepSummary(Callback):
    """After a multirun, gather each job's ``status.json`` into ``sweep_status.csv`` and a table on the terminal.

    Submitit reports jobs as completed even when they failed inside; reading the job's own status is the only
    reliable account of what happened. Failed jobs make ``digin -m`` exit with status 1 once the sweep is over.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from digin_cli.io.progress import print_table
        from digin_cli.io.writer import Writer

        sweep = Path(config.hydra.sweep.dir)
        rows = []
        for status_file in sorted(sweep.glob("*/status.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                status = {"status": "unreadable"}
            rows.append({"job": status_file.parent.name, "status": status.get("status"),
                         "seconds": status.get("seconds"), "error": status.get("error", "")})
        if rows:
            Writer(sweep).write_summary(rows, "sweep_status.csv")
            print_table(f"sweep {sweep}", rows)
        failed_jobs[:] = [r["job"] for r in rows if r["status"] != "ok"]
        from digin_cli.io import report

        report.refresh(report.write_sweep_report, sweep)
