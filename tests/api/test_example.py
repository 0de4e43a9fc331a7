"""scripts/api_example.py runs every generating method from Python on tiny models and saves what the CLI saves."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_example.py"


def test_the_api_example_runs_every_method_and_saves_their_items(tmp_path, capsys):
    runpy.run_path(str(SCRIPT))["main"](tmp_path)
    printed = capsys.readouterr().out
    for folder in ("disagreement", "neuron", "explain", "hard_prompt", "spurious/feature_3", "spurious/feature_5",
                   "vce", "neuron_cf", "npca"):
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["error"] is None and metrics["iterates"], folder
    text = (tmp_path / "hard_prompt" / "explanation.txt").read_text().strip()
    assert text.startswith("a picture of ") and text.split()[-1] in ("honey", "wasp", "flower")
    assert f"hard prompt '{text}'" in printed
    spurious = json.loads((tmp_path / "spurious" / "feature_3" / "metrics.json").read_text())
    assert spurious["summary"]["label"] == ("core" if spurious["summary"]["E_r"] >= 0.1 else "spurious")
    assert sorted(p.name for p in (tmp_path / "spurious" / "feature_3").glob("overlay_*.png")) == [
        "overlay_00.png", "overlay_01.png"]
    # The neuron's start is the object with the higher mean phi_5 of its plain samples, as task=neuron picks it.
    neuron = json.loads((tmp_path / "neuron" / "metrics.json").read_text())
    assert neuron["summary"]["phi_best"] > neuron["summary"]["phi_init"]
    # The real-image items: the files of the CLI's item folders.
    for folder in ("vce", "neuron_cf", "npca"):
        assert {"original.png", "reconstruction.png", "mask_overlay.png", "mask.png", "counterfactual.png",
                "iterates.png"} <= {p.name for p in (tmp_path / folder).iterdir()}, folder
    assert (tmp_path / "vce" / "attention.png").is_file() and (tmp_path / "npca" / "npca.png").is_file()
