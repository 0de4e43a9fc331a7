"""``import digin_cli as digin`` exposes the API lazily: the CLI's light modules never import torch through it."""

from __future__ import annotations

import subprocess
import sys


def test_the_api_names_are_reachable_and_light_imports_stay_light(api):
    from digin_cli.api import __all__ as names

    for name in [*names, "run_task"]:
        assert getattr(api, name) is not None and name in dir(api)
    code = "import sys; from digin_cli import errors, configs; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_api_reads_optimizer_settings_without_the_run_context():
    """The API sits below the runner: reading an optimizer preset never imports the CLI's RunContext module."""
    code = ("import sys, digin_cli as digin; settings, _ = digin.optimizer_settings('adam', steps=3); "
            "print(settings.steps, 'digin_cli.context' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "3 False", proc.stderr
