"""The ``digin`` command for tests, once: a subprocess runner with the test environment, and the check that a run
failed with exactly one ``digin: error:`` line and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DIGIN = [sys.executable, "-m", "digin_cli.cli"]
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
"""One torch thread (the machine is shared) and no hub: no test may download anything."""
ROOT = Path(__file__).resolve().parents[1]


def digin_env(env: dict | None = None) -> dict:
    """The environment of a ``digin`` subprocess: this one, the test environment, this checkout first on
    ``PYTHONPATH`` (an installed digin_cli of another checkout must not answer), then ``env`` (a None value removes
    the variable)."""
    full = {**os.environ, **ENV}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = str(value)
    return full


def run_digin(*args, env: dict | None = None, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``digin *args`` in a fresh process (this interpreter, :func:`digin_env`): Hydra overrides (``task=vce ...``)
    or a subcommand and its arguments (``study make A B --out S``, ``evaluate RUN``, ``report FOLDER``)."""
    return subprocess.run([*DIGIN, *(str(a) for a in args)], capture_output=True, text=True, env=digin_env(env),
                          cwd=cwd, timeout=timeout)


def one_line_error(result, *needles: str) -> str:
    """Assert a failed run printed one ``digin: error:`` line holding every needle and no traceback; returns it.

    ``result`` has ``returncode`` / ``stdout`` / ``stderr`` (a :class:`subprocess.CompletedProcess`) or is the
    ``(exit code, stdout, stderr)`` of an in-process run.
    """
    if hasattr(result, "returncode"):
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        code, out, err = result
    assert code not in (0, None), err
    assert "Traceback" not in err and "Traceback" not in out, err
    errors = [line for line in err.splitlines() if line.startswith("digin: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
