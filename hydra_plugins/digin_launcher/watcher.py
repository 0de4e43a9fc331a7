"""A SLURM job watcher that notices a job which is gone, with or without SLURM accounting.

submitit learns a job's state only from ``sacct``. On a cluster without accounting
(``AccountingStorageType=accounting_storage/none``) ``sacct`` fails, every state stays ``UNKNOWN``, and a job that
SLURM cancelled or killed never writes its result: the sweep waits forever. This watcher asks ``squeue`` about the
jobs ``sacct`` does not report (``squeue`` keeps finished jobs for ``MinJobAge``, 300 s by default, with their final
state), and calls a job that neither has reported for ``gone_after_s`` ``GONE``: done, so submitit looks for its
result, finds none and the launcher reports the job ``incomplete``.
"""

from __future__ import annotations

import subprocess
import time

from submitit.core import logger
from submitit.slurm.slurm import SlurmInfoWatcher

#: States of a job that may still produce its result. submitit's own list lacks the transient ones ``squeue`` shows
#: (CONFIGURING while nodes boot, SUSPENDED, REQUEUE_HOLD, ...), which would otherwise read as "finished".
ALIVE = frozenset({"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING",
                   "SUSPENDED", "STOPPED", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT",
                   "RESV_DEL_HOLD", "SPECIAL_EXIT"})

#: The state given to a job that neither sacct nor squeue has reported for ``gone_after_s``.
GONE = "GONE"


class GoneAwareWatcher(SlurmInfoWatcher):
    """``sacct`` first (it knows jobs for ever), then ``squeue`` for the jobs it does not report.

    ``delay_s`` bounds the time between two state checks (submitit checks at 2, 4, 8, ... s after a submission, then
    every ``delay_s``), so a job that vanished is noticed at most ``delay_s + gone_after_s`` after it went, plus the
    15 s submitit waits for a result file.
    """

    def __init__(self, delay_s: float, gone_after_s: float) -> None:
        super().__init__(delay_s=delay_s)  # type: ignore[arg-type]  # submitit annotates int, uses it as seconds
        self._gone_after_s = gone_after_s
        self._last_seen: dict[str, float] = {}

    def register_job(self, job_id: str) -> None:
        super().register_job(job_id)
        self._last_seen.setdefault(job_id, time.time())

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper().split()[0] not in ALIVE  # "CANCELLED by 0" -> CANCELLED

    def _ask(self, command: list[str]) -> dict[str, dict[str, str]]:
        try:
            output = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as err:
            # Expected for sacct without accounting, and for squeue once SLURM forgot a job ("Invalid job id").
            logger.get_logger().debug(f"{command[0]} gave no states ({err}); the gone-job grace period decides")
            return {}
        return self.read_info(output)

    def _squeue_command(self, job_ids: set[str]) -> list[str]:
        # --array: one line per array task (a pending array would otherwise read "12_[0-3]"); --states=all keeps the
        # jobs that just ended (CANCELLED, TIMEOUT, ...) in the answer.
        return ["squeue", "--array", "--noheader", "--states=all", "--format=%i|%T",
                "--jobs=" + ",".join(sorted({j.split("_")[0] for j in job_ids}))]

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        now = time.time()
        # submitit also registers an array's own id ("12" of "12_0", "12_1"), which no command reports by that name
        waiting = {j for j in self._registered - self._finished
                   if not any(k.startswith(j + "_") for k in self._registered)}
        seen = self._ask(command)
        missing = {j for j in waiting if j not in seen}
        if missing:
            queued = self._ask(self._squeue_command(missing))
            seen.update({j: info for j, info in queued.items() if j in missing})
        self._info_dict.update(seen)
        for job_id in waiting:
            if job_id in seen:
                self._last_seen[job_id] = now
            elif now - self._last_seen.setdefault(job_id, now) > self._gone_after_s:
                logger.get_logger().warning(f"SLURM job {job_id} is in neither sacct nor squeue since "
                                            f"{self._gone_after_s:g} s: taken as gone")
                self._info_dict[job_id] = {"JobID": job_id, "State": GONE}
        self._last_status_check = time.time()
        for job_id in waiting:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if isinstance(string, bytes):
            string = string.decode()
        if string.strip() and not string.startswith("JobID"):  # squeue's answer has no header line
            string = "JobID|State\n" + string
        return super().read_info(string)
