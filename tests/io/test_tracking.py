"""Tracker: disabled never touches wandb, offline records history, runs are always finished exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from digin_cli.errors import DiginError
from digin_cli.io.tracking import Tracker


class FakeRun:
    def __init__(self, fail: bool = False):
        self.finished: list[int] = []
        self.fail = fail

    def finish(self, exit_code=None):
        self.finished.append(exit_code)
        if self.fail:
            raise RuntimeError("network down")


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(DiginError, match=r"logger=disabled\|offline\|online") as info:
        Tracker(mode="ofline")
    assert "'offline'" in str(info.value)  # close-match suggestion
    assert "\n" not in str(info.value)


def test_disabled_never_calls_wandb(monkeypatch: pytest.MonkeyPatch):
    import wandb

    def forbidden(*args, **kwargs):
        raise AssertionError("wandb used while disabled")

    for name in ("init", "log", "finish", "Image"):
        monkeypatch.setattr(wandb, name, forbidden)
    with Tracker() as t:
        assert not t.enabled
        t.log({"loss": 1.0}, step=0)
        t.log_images({"img": torch.zeros(3, 2, 2)})
        t.summary({"best": 1.0})
    t.finish()


def test_disabled_does_not_import_wandb():
    # A fresh interpreter: in this one other tests have already imported wandb.
    code = (
        "import sys\n"
        "from digin_cli.io.tracking import Tracker\n"
        "with Tracker('disabled', project='p') as t:\n"
        "    t.log({'a': 1})\n"
        "assert 'wandb' not in sys.modules, 'wandb imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_context_manager_finishes_with_exit_code_1_on_error_and_only_once():
    t = Tracker()
    t.run = run = FakeRun()
    with pytest.raises(KeyError):
        with t:
            raise KeyError("boom")
    t.finish()
    assert run.finished == [1]
    assert not t.enabled


def test_a_failing_finish_does_not_mask_the_jobs_error():
    t = Tracker()
    t.run = run = FakeRun(fail=True)
    with pytest.raises(KeyError):
        with t:
            raise KeyError("the real error")
    t.finish()  # not retried
    assert run.finished == [1]


def test_clean_exit_finishes_with_0():
    t = Tracker()
    t.run = run = FakeRun()
    with t:
        pass
    assert run.finished == [0]


def test_init_failure_becomes_a_one_line_diginerror(monkeypatch: pytest.MonkeyPatch, wandb_env: Path):
    import wandb

    def no_key(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty).\ncall wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "init", no_key)
    with pytest.raises(DiginError, match="wandb login") as info:
        Tracker(mode="online")
    assert "api_key not configured" in str(info.value) and "\n" not in str(info.value)


def test_offline_run_records_history_images_and_summary(wandb_env: Path, tmp_path: Path, wandb_history):
    run_root = tmp_path / "job" / "wandb_dir"  # not created yet: the tracker makes it
    with Tracker(mode="offline", project="digin-test", group="g", tags=["t"], name="job0", job_type="sample",
                 dir=str(run_root), config={"lr": 0.1, "nested": {"steps": 3}}) as t:
        assert t.enabled
        run_id = t.run.id
        for step, loss in enumerate([1.0, 0.5, 0.25]):
            t.log({"loss": loss, "p": torch.tensor(0.5 + step / 10)}, step=step)
        t.log_images({"strip": torch.full((3, 8, 6), 0.5)}, step=2)
        t.summary({"best_loss": 0.25})

        # A second job in the same process (sequential multirun) gets its own run even though t is still open.
        t2 = Tracker(mode="offline", project="digin-test", name="job1", dir=str(run_root))
        assert t2.run.id != run_id
        t2.log({"loss": 9.0}, step=0)
        t2.finish()
        t2.finish()
    t.finish()  # idempotent after the context manager finished it
    assert not t.enabled

    runs = {p.name.rsplit("-", 1)[-1]: p for p in (run_root / "wandb").glob("offline-run-*")}
    assert run_id in runs and len(runs) == 2
    rows, summary = wandb_history(runs[run_id])
    assert [r["loss"] for r in rows] == [1.0, 0.5, 0.25]
    assert [r["_step"] for r in rows] == [0, 1, 2]
    assert rows[1]["p"] == pytest.approx(0.6)
    assert summary["best_loss"] == 0.25
    assert list((runs[run_id] / "files" / "media" / "images").glob("strip_2_*.png"))


def test_a_lazy_tracker_writes_nothing_until_started(wandb_env: Path, tmp_path: Path):
    run_root = tmp_path / "job" / "wandb_dir"
    t = Tracker(mode="offline", project="digin-test", name="lazy", dir=str(run_root), lazy=True)
    assert not t.enabled and not run_root.exists()
    t.finish(1)  # a job rejected before it started: nothing to finish, nothing written
    t.log({"loss": 1.0})  # finished trackers stay finished
    assert not run_root.exists()
    t2 = Tracker(mode="offline", project="digin-test", name="lazy2", dir=str(run_root), lazy=True)
    t2.log({"loss": 1.0})  # the first thing logged starts the run
    assert t2.enabled and list(run_root.glob("wandb/offline-run-*"))
    t2.finish()
