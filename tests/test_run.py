"""The job wrapper in-process, with a probe task: status.json is written first, W&B cannot prevent it, and a folder
of another config is refused."""

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from digin_cli import run as run_module
from digin_cli.configs import CONF_DIR, register


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A composed config (no ``hydra`` node, as ``@hydra.main`` hands it) and a probe task; returns (cfg, seen).

    The runner reads no Hydra state: the output folder is passed in (``seen["dir"]``)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="test"):
        cfg = compose("config", overrides=["task=sample", "device=cpu", f"paths.output_root={tmp_path}"])
    GlobalHydra.instance().clear()
    seen = {"dir": tmp_path / "job"}

    def probe_task(ctx):
        seen["status_during_job"] = json.loads((ctx.output_dir / "status.json").read_text())
        return {"probe": 1}

    monkeypatch.setattr("digin_cli.tasks.get_task", lambda name: probe_task)
    (tmp_path / "job").mkdir()
    yield cfg, seen


def test_status_is_running_during_the_job_and_ok_after(job):
    cfg, seen = job
    status = run_module.run(cfg, seen["dir"])
    assert seen["status_during_job"]["status"] == "running"  # what a killed job leaves behind
    assert seen["status_during_job"]["config_hash"] == status["config_hash"]
    assert status["status"] == "ok" and status["probe"] == 1


def test_a_failing_wandb_finish_cannot_prevent_the_status_write(job, monkeypatch, capsys):
    cfg, seen = job

    def broken_finish(self, exit_code=0):
        raise RuntimeError("wandb service died")

    monkeypatch.setattr("digin_cli.io.tracking.Tracker.finish", broken_finish)
    run_module.run(cfg, seen["dir"])
    status = json.loads((seen["dir"] / "status.json").read_text())
    assert status["status"] == "ok"
    assert "could not finish the W&B run" in capsys.readouterr().err


def test_a_folder_of_another_config_is_refused_and_left_alone(job, capsys):
    cfg, seen = job
    run_module.run(cfg, seen["dir"])
    path = seen["dir"] / "status.json"
    before = path.read_text()
    capsys.readouterr()
    with open_dict(cfg):
        cfg.seed = 1
    with pytest.raises(SystemExit) as exit_info:
        run_module.run(cfg, seen["dir"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("digin: error: ") and "different configuration" in line and "hydra.run.dir=" in line
    assert path.read_text() == before
