"""The ``digin`` console script.

Before Hydra takes over, a pre-flight composes the config once so that a mistyped option, a bad override or an
unwritable output folder becomes one line naming the fix (exit code 2) instead of a Hydra stack trace. Then
``@hydra.main`` runs the job(s) through :func:`digin_cli.run.run`. ``digin report <folder>`` rebuilds a run's or a
sweep's ``report.html``; ``digin study make|score`` (:mod:`digin_cli.study.cli`) builds and scores user studies. Neither
reaches Hydra.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from digin_cli.schemas import type_error
from digin_cli.configs import CONF_DIR, GROUPS, check_config, options, register
from digin_cli.errors import DiginError, suggest, suggest_key

register()


def _check_group_choice(group: str, value: str) -> None:
    if value in ("null", "None", ""):
        return
    available = options(group)
    if value not in available:
        raise DiginError(f"unknown {group} '{value}'{suggest(value, available)} — choose one of: "
                         f"{', '.join(available)}")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".digin-write-test-"):
            pass
    except OSError as err:
        raise DiginError(f"cannot write to output folder '{folder}' ({err.strerror or err}) — set "
                         "paths.output_root=/a/writable/folder") from None


def _check_creatable(folder: Path, key: str) -> None:
    """``folder`` (which Hydra creates later, so it is not created here) can be made and written to.

    Tried for real, in the nearest existing ancestor, with a temporary folder removed at once: permission bits say
    nothing for root or for filesystems such as /proc.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way", str(existing))
        probe = Path(tempfile.mkdtemp(dir=existing, prefix=".digin-write-test-"))
        probe.rmdir()
    except OSError as err:
        raise DiginError(f"cannot write to {key} '{folder}' ({err.strerror or err}) — set "
                         f"{key}=/a/writable/folder") from None


def _close_key(key: str, overrides: list[str]) -> str:
    """A close existing key for an override Hydra could not apply, from the config composed without it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="digin"):
            return suggest_key(key, compose("config", overrides=rest))
    except Exception:  # another override is broken too: the plain message still names the key
        return ""
    finally:
        GlobalHydra.instance().clear()


def preflight(argv: list[str]) -> None:
    """Validate the command line the way the job will see it, without running anything."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException


    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as err:
        raise DiginError(f"{str(err).splitlines()[0]} — overrides look like key=value (see digin --help)") from None
    single, variants = [], []
    for n, (override, text) in enumerate(zip(parsed, args.overrides)):
        group = override.key_or_group
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        if group in GROUPS and group != "paths" and not override.is_delete():
            for value in values:
                _check_group_choice(group, str(value))
        elif override.is_sweep_override():  # a swept value: each one is type-checked like a single override
            variants += [(n, f"{override.get_key_element()}={value}") for value in values[1:]]
        single.append(f"{override.get_key_element()}={values[0]}" if override.is_sweep_override() else text)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="digin"):
            cfg = compose("config", overrides=single, return_hydra_config=True)
            check_config(cfg)
            for n, text in variants:
                check_config(compose("config", overrides=[*single[:n], text, *single[n + 1:]]))
    except HydraException as err:
        typed = type_error(err)  # a value its group's schema refuses (optimizer.steps=abc): the key's own words
        if typed:
            raise DiginError(typed) from None
        lines = str(err).splitlines()
        append = next((ln.rsplit(" ", 1)[-1] for ln in lines if ln.startswith("To append to your config use +")), "")
        if append.startswith(("+classifier.model.", "+classifier2.model.")):
            # classifier=torch_module: the user's own model takes keyword arguments no config file can list.
            raise DiginError(f"{lines[0]} — arguments of your model are new keys: write {append}") from None
        unknown = re.match(r"Could not override '([^']+)'", lines[0])
        hint = _close_key(unknown.group(1), single) if unknown and append else ""
        raise DiginError(f"{lines[0].rstrip('.')}{hint} — see digin --help for groups and options") from None
    finally:
        GlobalHydra.instance().clear()
    _check_writable(Path(str(cfg.paths.output_root)).expanduser())
    multirun = args.multirun or str(OmegaConf.select(cfg, "hydra.mode")) == "RunMode.MULTIRUN"
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    _check_creatable(Path(str(OmegaConf.select(cfg, key))).expanduser(), key)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from digin_cli.run import run

    job = HydraConfig.get()  # the runner itself knows nothing of Hydra: the folders and overrides are handed in
    run(cfg, job.runtime.output_dir, list(job.overrides.task),
        sweep_dir=job.sweep.dir if job.mode == RunMode.MULTIRUN else None)


def run_task(overrides: list[str] | tuple[str, ...] = (), output_dir: str | os.PathLike | None = None) -> dict:
    """One ``digin <overrides>`` run from Python: ``digin.run_task(["task=vce", ...], output_dir=...)``.

    The overrides are checked as the command line's (one-line :class:`DiginError`), composed with Hydra's compose
    API, and the job runs in ``output_dir`` (default: the folder the CLI would choose, ``hydra.run.dir``) with the
    same files as ``digin``'s run, apart from Hydra's own ``.hydra/`` and ``cli.log``. Returns the job's status;
    a job that fails or is refused raises :class:`DiginError` naming its status.json. Sweeps (``-m``) stay the CLI's.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from digin_cli.run import run

    overrides = [str(o) for o in overrides]
    if output_dir is not None:
        overrides.append(f"hydra.run.dir={Path(output_dir).expanduser()}")
    preflight(overrides)
    outer = GlobalHydra.instance()
    saved = outer.hydra if outer.is_initialized() else None  # a caller's own Hydra app keeps its state
    outer.clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="digin"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except HydraException as err:
        raise DiginError(f"{str(err).splitlines()[0]} — run_task takes single runs (no sweeps): key=value") from None
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)
    folder = Path(str(cfg.hydra.run.dir)).expanduser()
    with open_dict(cfg):
        del cfg["hydra"]
    folder.mkdir(parents=True, exist_ok=True)
    task_overrides = [o for o in overrides if not o.startswith("hydra.")]
    status = run(cfg, folder, task_overrides, exit_on_error=False)
    if status.get("status") not in ("ok",):
        raise DiginError(str(status.get("error")))  # already "<what> — <fix>"; status.json in the folder keeps it
    return status


def report_main(argv: list[str]) -> None:
    """``digin report <run or sweep folder>``: (re)build report.html from what the folder holds."""
    import argparse

    from digin_cli.io.report import rebuild
    from digin_cli.task_registry import run_key_images

    parser = argparse.ArgumentParser(prog="digin report", description="Write report.html for a run folder, or for "
                                     "a sweep folder and every job in it, from the files already there.")
    parser.add_argument("folder", type=Path, help="outputs/<task>/runs/<run> or outputs/<task>/multiruns/<sweep>")

    def usage_error(message: str):
        raise DiginError(f"digin report: {message} — usage: digin report <run or sweep folder>")

    parser.error = usage_error
    args = parser.parse_args(argv)
    for page in rebuild(args.folder, run_key_images):
        print(page)


def evaluate_main(argv: list[str]) -> None:
    """``digin evaluate <run or sweep folder> [--metrics ...]``: argparse in digin_cli/evaluation/cli.py."""
    from digin_cli.evaluation.cli import main as evaluate

    evaluate(argv)


def study_main(argv: list[str]) -> None:
    """``digin study make|score ...``: argparse in digin_cli/study/cli.py."""
    from digin_cli.study.cli import main as study

    study(argv)


SUBCOMMANDS = {"report": report_main, "evaluate": evaluate_main, "study": study_main}
"""Words that, as the first argument, are subcommands, not overrides: Hydra never sees them."""


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    subcommand = SUBCOMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    if subcommand is not None:
        try:
            subcommand(sys.argv[2:])
        except DiginError as err:
            print(f"digin: error: {err}", file=sys.stderr)
            sys.exit(2)
        return
    try:
        preflight(sys.argv[1:])
    except DiginError as err:
        print(f"digin: error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
    from digin_cli.callbacks import failed_jobs

    if failed_jobs:  # the other jobs ran to the end; still, a sweep with failures must not look like a success
        print(f"digin: error: sweep jobs {', '.join(failed_jobs)} failed, were refused or are incomplete — see "
              "sweep_status.csv and each job's status.json; re-run the same command to complete a killed sweep",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
