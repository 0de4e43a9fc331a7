"""The API's tiny components, built once through the API's own builders (the CLI presets tiny / tiny_a / tiny_b)."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import run_digin


@pytest.fixture(scope="session")
def api():
    import digin_cli as digin

    return digin


@pytest.fixture(scope="session")
def tiny(api):
    """Generator (3 DDIM steps, as the CLI runs below) and classifiers f, g."""
    return (api.load_generator("tiny", num_steps=3, device="cpu"), api.load_classifier("tiny_a"),
            api.load_classifier("tiny_b"))


@pytest.fixture(scope="session")
def cli():
    return run_digin


def numbers(metrics: dict) -> dict:
    """metrics.json without what legitimately differs between runs (time, memory, the run's config hash)."""
    drop = {"seconds", "peak_memory_mb", "config_hash"}
    return {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if isinstance(v, dict) else v)
            for k, v in metrics.items() if k not in drop}


@pytest.fixture(scope="session")
def same_item():
    """Asserts two item folders hold byte-identical images and the same metrics (but time and memory)."""

    def check(a, b, images=("init.png", "best.png", "iterates.png")):
        for name in images:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert numbers(json.loads((a / "metrics.json").read_text())) == numbers(json.loads(
            (b / "metrics.json").read_text()))

    return check
