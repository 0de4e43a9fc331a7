"""Sweeps on a real single-node SLURM, with and without accounting (``make test-slurm``).

Each set-up is a private cluster started by scripts/slurm/cluster.sh in a temporary folder and stopped by its
daemons' pids when the module's tests are done, pass or fail. Without root, the SLURM packages, or the opt-in
``DIGIN_TEST_SLURM=1`` that ``make test-slurm`` sets, these tests are skipped (``make test`` stays green and fast).
"""

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_helpers import DIGIN, run_digin

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "cluster.sh"
# the tiny demo models on CPU, one CPU per job so that two jobs share this node
FAST = ["experiment=demo", "optimizer.augment.num=2", "generator.num_steps=3", "optimizer.steps=8"]
# poll every 2 s; a job absent from sacct and squeue for 30 s is gone
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.poll_s=2",
         "hydra.launcher.gone_after_s=30"]
# from scancel to the sweep's exit: one poll, submitit's 15 s wait for a result file, the summary; generous for a
# loaded machine, but bounded (without the squeue fall-back, no accounting waits for ever)
NOTICED_WITHIN_S = 90


def _why_no_cluster() -> str | None:
    if os.environ.get("DIGIN_TEST_SLURM") != "1":
        return "a real SLURM is set up by `make test-slurm` (DIGIN_TEST_SLURM=1)"
    if os.geteuid() != 0:
        return "the private SLURM daemons run as root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sbatch") if not shutil.which(b)]
    if missing:
        return f"not installed: {', '.join(missing)} (scripts/slurm/cluster.sh install)"
    return None


@pytest.fixture(scope="module", params=["accounting", "none"], ids=["accounting", "no_accounting"])
def cluster(request, tmp_path_factory):
    """``(env, mode)`` for a running private cluster; its daemons are stopped by pid afterwards, always."""
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)
    # make test-slurm names the folder, to stop the daemons even if pytest itself gets killed
    base = os.environ.get("DIGIN_SLURM_DIR")
    folder = Path(base) / request.param if base else tmp_path_factory.mktemp(f"slurm_{request.param}")
    try:
        up = subprocess.run([str(CLUSTER), "up", str(folder), request.param], capture_output=True, text=True,
                            timeout=300)
        if up.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in folder.glob("*.log"))
            pytest.fail(f"cluster.sh up failed:\n{up.stderr}\n{logs}")
        yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1"}, request.param
    finally:
        subprocess.run([str(CLUSTER), "down", str(folder)], timeout=300, check=False)


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _statuses(sweep: Path) -> dict[str, str]:
    return {r["job"]: r["status"] for r in _csv(sweep / "sweep_status.csv")}


def _wait_for(condition, proc, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {what} within {seconds} s: {proc.communicate()[1][-3000:]}")


def _running_between_items(job: Path):
    """The job's SLURM id once its first item is done and its second is not."""
    try:
        status = json.loads((job / "status.json").read_text())
    except (OSError, ValueError):
        return None
    first_done = any(job.glob("1_goldfish/*/metrics.json"))
    second_done = any(job.glob("277_red_fox/*/metrics.json"))
    if status.get("status") == "running" and first_done and not second_done:
        # as <array>_<task>: one task of an array also holds the array's own id, and scancel of that id ends them all
        task = status["slurm_array_task_id"]
        folders = list((job.parent / ".submitit").glob(f"*_{task}"))
        return folders[0].name if len(folders) == 1 else None
    return None


def test_a_cancelled_job_is_incomplete_soon_and_a_rerun_completes_only_it(cluster, tmp_path):
    env, mode = cluster
    sweep = tmp_path / "sweep"
    # 150 steps: an item outlasts SLURM's KillWait (5 s) many times over (~6 s for 30 steps on an idle core, measured),
    # during which a cancelled job still runs (submitit ignores SIGTERM) and could otherwise finish its second item
    args = ["-m", *FAST, "optimizer.steps=150", "task.classes=[goldfish,red fox]", "seed=0,1", *SLURM,
            f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([*DIGIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = _wait_for(lambda: _running_between_items(sweep / "1"), proc, 300, "job 1 between its two items")
    subprocess.run(["scancel", victim], env=env, check=True, timeout=60)
    cancelled_at = time.time()
    try:
        _, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"digin -m still waits {400} s after scancel ({mode}): {proc.communicate()[1][-3000:]}")
    waited = time.time() - cancelled_at
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "incomplete" in err
    statuses = _statuses(sweep)
    assert statuses["1"] == "incomplete", statuses
    assert statuses["0"] == "ok", statuses  # the other job of the 2-job sweep completed
    # job 0 may still have been running when job 1 was cancelled: bound the wait after both were over
    job0_end = (sweep / "0" / "status.json").stat().st_mtime
    assert time.time() - max(cancelled_at, job0_end) < NOTICED_WITHIN_S + 5, (waited, mode)
    assert not any((sweep / "1").glob("277_red_fox/*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/*/*/metrics.json")}
    assert len(stamps) == 3  # job 0's two items, job 1's first

    job0_status = (sweep / "0" / "status.json").read_bytes()
    again = run_digin(*args, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing finished was redone
    assert _statuses(sweep) == {"0": "ok", "1": "ok"}
    assert [(r["class"], r["status"]) for r in _csv(sweep / "1" / "summary.csv")] == [
        ("goldfish", "done before"), ("red fox", "ok")]
    assert (sweep / "0" / "status.json").read_bytes() == job0_status  # a finished job is not even started again


def test_a_job_killed_by_its_time_limit_is_incomplete(cluster, tmp_path):
    env, mode = cluster
    sweep = tmp_path / "sweep"
    # a job far longer than its 1-minute limit (the tiny models take about a second per step here); submitit's
    # warning signal 20 s before the limit, not its default 120 s: with a 1-minute limit that would arrive at once,
    # before Python has installed any handler, and kill the job before it wrote its status (seen on an idle machine)
    args = ["-m", *FAST, "optimizer.steps=100000", "task.classes=[goldfish]", "seed=0", *SLURM,
            "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20", f"paths.output_root={tmp_path}",
            f"hydra.sweep.dir={sweep}"]
    start = time.time()
    proc = run_digin(*args, env=env, timeout=400)
    took = time.time() - start
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _statuses(sweep) == {"0": "incomplete"}
    status = json.loads((sweep / "0" / "status.json").read_text())
    assert status["status"] == "running"  # killed by SLURM mid-item, not a task failure
    assert not (sweep / "0" / "summary.csv").exists() or "failed" not in (sweep / "0" / "summary.csv").read_text()
    if mode == "accounting":
        state = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", status["slurm_job_id"]], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        assert state == ["TIMEOUT"], state
    # the limit (60 s) + SLURM's time-limit check (every 30 s) + KillWait (5 s) + start-up + noticing it
    assert took < 60 + 30 + 5 + 60 + NOTICED_WITHIN_S, took
