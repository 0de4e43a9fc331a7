"""digin.run_task: the CLI's run from Python (compose API, no HydraConfig), in the folder the CLI would choose."""

from __future__ import annotations

import json
import re

import pytest

from digin_cli.errors import DiginError

FAST = ["experiment=demo", "optimizer.steps=2", "optimizer.augment.num=2", "generator.num_steps=3",
        "task.classes=[goldfish]"]


@pytest.mark.slow
def test_run_task_writes_the_cli_run_in_the_cli_folder(api, cli, same_item, tmp_path, monkeypatch):
    proc = cli(*FAST, f"hydra.run.dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr
    status = api.run_task(FAST, output_dir=tmp_path / "api")
    assert status["status"] == "ok" and status["items"] == 1
    same_item(tmp_path / "cli" / "1_goldfish" / "seed_0", tmp_path / "api" / "1_goldfish" / "seed_0")
    for name in ("summary.csv", "config.yaml", "status.json", "report.html"):
        assert (tmp_path / "api" / name).is_file()
    assert json.loads((tmp_path / "api" / "status.json").read_text())["config_hash"] == json.loads(
        (tmp_path / "cli" / "status.json").read_text())["config_hash"]
    # Without output_dir: <output_root>/<task>/runs/<time>_<uid>, as hydra.run.dir says for the CLI.
    monkeypatch.chdir(tmp_path)
    status = api.run_task([*FAST, "paths.output_root=out"])
    (folder,) = (tmp_path / "out" / "disagreement" / "runs").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\w+", folder.name) and status["output_dir"] == str(
        folder.relative_to(tmp_path))


def test_run_task_errors_are_one_line_and_write_nothing(api, tmp_path):
    with pytest.raises(DiginError, match="unknown task 'disagrement'.*disagreement"):
        api.run_task(["task=disagrement"], output_dir=tmp_path / "a")
    with pytest.raises(DiginError, match="optimizer.stepz"):
        api.run_task(["experiment=demo", "optimizer.stepz=2"], output_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_job_that_fails_raises_its_one_line_and_keeps_its_status(api, tmp_path):
    with pytest.raises(DiginError, match="koalaa") as err:
        api.run_task(["experiment=demo", "task.classes=[koalaa]"], output_dir=tmp_path / "run")
    assert "\n" not in str(err.value)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "koalaa" in status["error"]
