"""The job wrapper in-process, with a probe task: status.json is written first, W&B cannot prevent it, and a folder
of another config is refused."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from digin_cli import run as run_module
from digin_cli.configs import CONF_DIR, register


@pytest.fixture
def job(tmp_path, monkeypatch):
    """Set up Hydra's job state as ``run_job`` does, for a single run in ``tmp_path``; returns (cfg, seen)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="test"):
        full = compose("config", overrides=["task=sample", "device=cpu", f"paths.output_root={tmp_path}"],
                       return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(full):
        full.hydra.runtime.output_dir = str(tmp_path / "job")
        full.hydra.mode = "RUN"
    HydraConfig.instance().set_config(full)
    cfg = full.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    seen = {}

    def probe_task(ctx):
        seen["status_during_job"] = json.loads((ctx.output_dir / "status.json").read_text())
        return {"probe": 1}

    monkeypatch.setattr("digin_cli.tasks.get_task", lambda name: probe_task)
    (tmp_path / "job").mkdir()
    yield cfg, seen
    HydraConfig.instance().cfg = None  # other tests must not see this job's Hydra state


def test_status_is_running_during_the_job_and_ok_after(job):
    cfg, seen = job
    status = run_module.run(cfg)
    assert seen["status_during_job"]["status"] == "running"  # what a killed job leaves behind
    assert seen["status_during_job"]["config_hash"] == status["config_hash"]
    assert status["status"] == "ok" and status["probe"] == 1


def test_a_failing_wandb_finish_cannot_prevent_the_status_write(job, monkeypatch, capsys):
    cfg, _ = job

    def broken_finish(self, exit_code=0):
        raise RuntimeError("wandb service died")

    monkeypatch.setattr("digin_cli.io.tracking.Tracker.finish", broken_finish)
    run_module.run(cfg)
    status = json.loads((Path(HydraConfig.get().runtime.output_dir) / "status.json").read_text())
    assert status["status"] == "ok"
    assert "could not finish the W&B run" in capsys.readouterr().err


def test_a_folder_of_another_config_is_refused_and_left_alone(job, capsys):
    cfg, _ = job
    run_module.run(cfg)
    path = Path(HydraConfig.get().runtime.output_dir) / "status.json"
    before = path.read_text()
    capsys.readouterr()
    with open_dict(cfg):
        cfg.seed = 1
    with pytest.raises(SystemExit) as exit_info:
        run_module.run(cfg)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("digin: error: ") and "different configuration" in line and "hydra.run.dir=" in line
    assert path.read_text() == before
