"""make fig10 / fig11 presets fail in a second, with one line, when data or weights are missing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("figure,missing,needles", [
    ("fig10", (), ["paths.imagenet_val", "IMAGENET_VAL"]),
    ("fig11", (), ["paths.imagenet_val", "IMAGENET_VAL"]),
    ("fig11", ("IMAGENET_VAL",), ["paths.imagenet_train", "IMAGENET_TRAIN"]),
    ("fig10", ("IMAGENET_VAL",), ["classifier.checkpoint"]),
    ("fig11", ("IMAGENET_VAL", "IMAGENET_TRAIN"), ["classifier.checkpoint"]),
])
def test_paper_figures_fail_fast_without_data(data, digin_here, expect_error, monkeypatch, tmp_path, figure, missing,
                                               needles):
    for name in ("IMAGENET_VAL", "IMAGENET_TRAIN"):
        monkeypatch.delenv(name, raising=False)
    for name in missing:
        monkeypatch.setenv(name, str(data / "train"))  # any existing folder: the check after it must fire
    proc = digin_here(f"experiment={figure}", output=tmp_path, tiny=False)
    expect_error(proc, *needles)
    assert not list(tmp_path.glob("*/runs/*/*/metrics.json"))
