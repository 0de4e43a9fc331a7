"""digin's Hydra launchers: submitit's SLURM and local launchers, made to survive killed jobs (Hydra loads
launchers only from the hydra_plugins package, so they live here rather than in digin_cli).

Submitit's launcher collects every job's return value and raises as soon as one job has none: a job that SLURM
killed (time limit, preemption, out of memory) or that got SIGKILL. Hydra then aborts the multirun, so the sweep
summary is never written and the user only sees a stack trace. These launchers collect such a job as a finished job
whose return value says ``incomplete``; the sweep summary then reads its ``status.json`` (``running``, written at
job start) and reports it, and ``digin -m`` exits 1. Re-running the same command completes it.

The SLURM launcher also watches its jobs with :class:`~.watcher.GoneAwareWatcher` (``squeue`` where ``sacct`` knows
nothing, as on clusters without accounting), so a cancelled job is noticed instead of waited for forever.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _Local
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _Slurm

from .watcher import GoneAwareWatcher


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
    """submitit's SLURM launcher, tolerant of jobs SLURM killed, and of clusters without accounting.

    ``poll_s`` and ``gone_after_s`` (conf/hydra/launcher/slurm.yaml) are digin's, not sbatch's: they are taken out of
    the parameters submitit passes on.
    """

    def __init__(self, poll_s: float = 60.0, gone_after_s: float = 300.0, **params: Any) -> None:
        for key, value in (("poll_s", poll_s), ("gone_after_s", gone_after_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                # Hydra builds the launcher outside digin's error handling: exit with digin's one line here
                print(f"digin: error: hydra.launcher.{key}={value!r} is not a positive number of seconds — pass "
                      f"e.g. hydra.launcher.{key}=60", file=sys.stderr)
                sys.exit(2)
        super().__init__(**params)
        self.poll_s, self.gone_after_s = float(poll_s), float(gone_after_s)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """Runs in the SLURM job. Near the time limit SLURM sends submitit's signal (``--signal=USR2@...``), and
        submitit, unable to requeue a timed-out job, raises inside the running task: the item in progress would
        be recorded as failed and the job as ``ok``. Instead the signal is logged and SLURM ends the job at its
        limit, leaving ``status.json`` at ``running``: reported ``incomplete``, completed by a re-run. Preemption
        (the same signal before the limit) still goes to submitit, which requeues the job."""
        from submitit.slurm.slurm import SlurmJobEnvironment

        usr_sig = getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG)  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says
        handler = signal.getsignal(usr_sig)
        submitit_handler = getattr(handler, "__self__", None)
        if callable(handler) and hasattr(submitit_handler, "has_timed_out"):

            def on_signal(signum: int, frame: Any) -> None:
                if submitit_handler.has_timed_out():
                    print("digin: SLURM time limit near; the job ends there and is reported incomplete — re-run "
                          "the same command (or raise hydra.launcher.timeout_min) to complete it", file=sys.stderr)
                    return
                handler(signum, frame)

            signal.signal(usr_sig, on_signal)
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.slurm.slurm import SlurmJob

        # The watcher is a class attribute shared by every SlurmJob; swapped only while this sweep runs.
        shared = SlurmJob.watcher
        SlurmJob.watcher = GoneAwareWatcher(delay_s=self.poll_s, gone_after_s=self.gone_after_s)
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            SlurmJob.watcher = shared
