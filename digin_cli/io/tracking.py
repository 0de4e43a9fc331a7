"""Weights & Biases tracking behind one small interface.

``mode='disabled'`` never imports wandb, so runs without W&B start fast and cannot fail on it. The other modes
open one run per job; ``reinit='finish_previous'`` lets a sequential Hydra multirun start a fresh run per job in the
same process even if an earlier job died before finishing its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from digin_cli.errors import DiginError, suggest
from digin_cli.io.atomic import tensor_to_pil

MODES = ("disabled", "offline", "online")
log = logging.getLogger(__name__)


def _scalar(value: Any) -> Any:
    # 0-d tensors / numpy scalars become plain numbers; wandb would otherwise treat tensors as histograms.
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


class Tracker:
    """A W&B run, or nothing at all when disabled. Use as a context manager so the run is always finished.

    With ``lazy=True`` the run starts at :meth:`start` or at the first thing logged, not in the constructor: a job
    checks its inputs first, so a rejected input leaves no W&B run (and no run folder) behind.
    """

    def __init__(
        self,
        mode: str = "disabled",
        project: str = "digin",
        entity: str | None = None,
        group: str | None = None,
        tags: list | None = None,
        name: str | None = None,
        job_type: str | None = None,
        dir: str | None = None,
        config: dict | None = None,
        lazy: bool = False,
    ):
        if mode not in MODES:
            hint = suggest(str(mode), MODES)
            raise DiginError(f"unknown logger mode {mode!r}{hint}; use logger=disabled|offline|online")
        self.mode = mode
        self.run: Any = None
        self._init = dict(project=project, entity=entity, group=group, tags=list(tags) if tags else None, name=name,
                          job_type=job_type, dir=dir, config=config)
        self._finished = False
        if not lazy:
            self.start()

    def start(self) -> None:
        """Start the W&B run (once; nothing when disabled or already finished)."""
        if self.mode == "disabled" or self.run is not None or self._finished:
            return
        import wandb  # deferred: importing wandb costs seconds and is pointless when disabled

        init, self._wandb = self._init, wandb
        if init["dir"] is not None:
            Path(init["dir"]).mkdir(parents=True, exist_ok=True)  # wandb falls back to a temp dir when it is missing
        try:
            self.run = wandb.init(**{**init, "config": _plain(init["config"])}, mode=self.mode,
                                  reinit="finish_previous", settings=_settings(wandb))
        except Exception as e:  # no API key, no network, bad entity: all fixable by the user
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            fix = "run `wandb login` or use logger=offline" if self.mode == "online" else "check the W&B directory"
            raise DiginError(f"could not start the W&B run ({detail}); {fix}") from e

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.start()
        if self.run is not None:
            self.run.log({k: _scalar(v) for k, v in metrics.items()}, step=step)

    def log_images(self, images: dict[str, Any], step: int | None = None) -> None:
        """Log tensors (``(3,H,W)`` in [0,1]) or PIL images as ``wandb.Image``."""
        self.start()
        if self.run is None:
            return
        self.run.log({k: self._wandb.Image(tensor_to_pil(v)) for k, v in images.items()}, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """Log a ``wandb.Table``; cells holding a ``Path`` to an image become ``wandb.Image``."""
        if self.run is None:
            return
        data = [[self._wandb.Image(str(c)) if isinstance(c, Path) else _scalar(c) for c in row] for row in rows]
        self.run.log({key: self._wandb.Table(columns=columns, data=data)})

    def summary(self, values: dict) -> None:
        self.start()
        if self.run is not None:
            self.run.summary.update({k: _scalar(v) for k, v in values.items()})

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run; later calls do nothing."""
        run, self.run = self.run, None  # cleared first so a finish that raises is not retried
        self._finished = True
        if run is not None:
            run.finish(exit_code=exit_code)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish(0)
            return
        try:
            self.finish(1)
        except Exception:  # the job's own error is the one the user needs to see
            log.warning("W&B finish failed while handling another error", exc_info=True)


def _settings(wandb: Any) -> Any:
    try:
        return wandb.Settings(start_method="thread")
    except Exception:  # wandb >= 0.19 always uses its service process and rejects the key
        return None


def _plain(config: Any) -> Any:
    # An OmegaConf node is not a dict to wandb; resolve it so interpolations are logged as values.
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:
        return config
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
