"""digin's Hydra launchers: submitit's SLURM and local launchers, made to survive killed jobs (Hydra loads
launchers only from the hydra_plugins package, so they live here rather than in digin_cli).

Submitit's launcher collects every job's return value and raises as soon as one job has none: a job that SLURM
killed (time limit, preemption, out of memory) or that got SIGKILL. Hydra then aborts the multirun, so the sweep
summary is never written and the user only sees a stack trace. These launchers collect such a job as a finished job
whose return value says ``incomplete``; the sweep summary then reads its ``status.json`` (``running``, written at
job start) and reports it, and ``digin -m`` exits 1. Re-running the same command completes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _Local
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _Slurm


@contextlib.contextmanager
def _dead_jobs_return_incomplete() -> Iterator[None]:
    """While active, ``Job.results()`` of a job that produced no result returns an ``incomplete`` JobReturn."""
    from submitit.core.core import Job
    from submitit.core.utils import UncompletedJobError

    results = Job.results

    def tolerant(job: Job) -> list[Any]:
        try:
            return results(job)
        except UncompletedJobError as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            ret = JobReturn(status=JobStatus.COMPLETED, _return_value={"status": "incomplete", "error": first})
            return [ret]

    Job.results = tolerant
    try:
        yield
    finally:
        Job.results = results


class _Tolerant:
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with _dead_jobs_return_incomplete():
            return super().launch(job_overrides, initial_job_idx)


class LocalLauncher(_Tolerant, _Local):
    """submitit's local launcher (jobs as local processes), tolerant of killed jobs."""


class SlurmLauncher(_Tolerant, _Slurm):
    """submitit's SLURM launcher, tolerant of jobs SLURM killed."""
