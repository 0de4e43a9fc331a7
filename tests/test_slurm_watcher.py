"""The SLURM launcher's job watcher against scripted ``sacct`` / ``squeue`` answers (no cluster needed).

tests/test_slurm.py runs the same watcher on a real single-node SLURM (make test-slurm).
"""

import os
import time

import pytest

from hydra_plugins.digin_launcher.watcher import GoneAwareWatcher


@pytest.fixture
def slurm_commands(tmp_path, monkeypatch):
    """Fake ``sacct`` and ``squeue`` on PATH, printing what ``answers`` holds (None: fail like SLURM does)."""
    answers = {"sacct": None, "squeue": None}
    calls = tmp_path / "calls"

    def write():
        for name, answer in answers.items():
            body = f"printf '%s\\n' '{answer}'" if answer is not None else "echo 'slurm: error' >&2; exit 1"
            script = tmp_path / name
            script.write_text(f"#!/bin/sh\necho {name} \"$@\" >> {calls}\n{body}\n")
            script.chmod(0o755)
        time.sleep(0.01)  # submitit ignores a forced update within 1 ms of the last one

    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    write()
    return answers, write, calls


def watcher(*job_ids, gone_after_s=3600.0):
    w = GoneAwareWatcher(delay_s=1, gone_after_s=gone_after_s)
    for job_id in job_ids:
        w.register_job(job_id)
    return w


def test_without_accounting_squeue_gives_the_state(slurm_commands):
    answers, write, calls = slurm_commands
    answers["squeue"] = "12_0|RUNNING\n12_1|PENDING"  # sacct fails: "Slurm accounting storage is disabled"
    write()
    w = watcher("12", "12_0", "12_1")
    assert not w.is_done("12_0", mode="force") and not w.is_done("12_1", mode="force")
    assert w.get_state("12_0", mode="cache") == "RUNNING"
    assert "squeue --array --noheader --states=all --format=%i|%T --jobs=12" in calls.read_text()
    answers["squeue"] = "12_0|CANCELLED\n12_1|RUNNING"  # scancel'led: squeue keeps it for MinJobAge
    write()
    assert w.is_done("12_0", mode="force") and not w.is_done("12_1", mode="force")
    assert w.get_state("12_0", mode="cache") == "CANCELLED"


def test_a_job_in_neither_sacct_nor_squeue_is_gone_only_after_the_grace_period(slurm_commands):
    answers, write, _ = slurm_commands
    answers["squeue"] = "7_0|RUNNING"
    write()
    w = watcher("7", "7_0", gone_after_s=0.5)
    assert not w.is_done("7_0", mode="force")
    answers["squeue"] = None  # purged after MinJobAge ("Invalid job id specified"), or the controller is down
    write()
    assert not w.is_done("7_0", mode="force")  # unknown, but not for long yet
    time.sleep(0.6)
    assert w.is_done("7_0", mode="force")
    assert w.get_state("7_0", mode="cache") == "GONE"
    assert not w.is_done("7", mode="cache")  # the array's own id is never taken as gone


def test_with_accounting_sacct_decides_and_squeue_is_not_asked(slurm_commands):
    answers, write, calls = slurm_commands
    answers["sacct"] = "JobID|State|NodeList\n5_0|RUNNING|vm\n5_0.batch|RUNNING|vm\n5_1|CANCELLED by 0|vm"
    answers["squeue"] = "5_0|COMPLETED\n5_1|COMPLETED"  # would contradict: must not be read
    write()
    w = watcher("5", "5_0", "5_1")
    assert not w.is_done("5_0", mode="force") and w.is_done("5_1", mode="force")
    assert "squeue" not in calls.read_text()


def test_transient_squeue_states_are_not_taken_for_finished(slurm_commands):
    answers, write, _ = slurm_commands
    answers["squeue"] = "3_0|CONFIGURING\n3_1|SUSPENDED\n3_2|TIMEOUT"
    write()
    w = watcher("3", "3_0", "3_1", "3_2")
    assert [w.is_done(j, mode="force") for j in ("3_0", "3_1", "3_2")] == [False, False, True]


@pytest.mark.parametrize("key,value", [("poll_s", 0), ("gone_after_s", -5), ("poll_s", "abc"), ("poll_s", True)])
def test_bad_launcher_seconds_give_one_line(key, value, capsys):
    from hydra_plugins.digin_launcher.launchers import SlurmLauncher

    with pytest.raises(SystemExit) as exit_:
        SlurmLauncher(**{key: value}, submitit_folder="x")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"digin: error: hydra.launcher.{key}=") and "pass e.g." in err[0]
    assert SlurmLauncher(poll_s=2, gone_after_s=30, submitit_folder="x").poll_s == 2.0  # and good values pass
