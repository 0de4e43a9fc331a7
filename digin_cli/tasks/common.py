"""Pieces every optimisation task shares: the per-item loop with skip/failure handling and result writing."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from digin_cli.context import RunContext
from digin_cli.device import peak_memory_mb, reset_peak_memory
from digin_cli.errors import DiginError
from digin_cli.io.atomic import atomic_write_text
from digin_cli.io.progress import print_table, track
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimResult


def require_invertible_sampler(ctx: RunContext) -> None:
    """Tasks on real images invert them with DDIM (null-text inversion); LCM's noisy steps have no inverse."""
    sampler = ctx.cfg.generator.get("sampler", "ddim")
    if sampler != "ddim":
        raise DiginError(f"task={ctx.cfg.task.name} inverts real images, which needs the deterministic DDIM sampler, "
                         f"not generator.sampler={sampler} — use a DDIM generator (e.g. generator=sd15, or "
                         "generator.sampler=ddim without an LCM LoRA)")


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` images dimmed outside ``mask`` ``(B, 1, H, W)`` and tinted red inside it (mask pictures)."""
    red = torch.tensor([1.0, 0.2, 0.2], device=image.device).view(1, 3, 1, 1)
    return (image * (0.35 + 0.65 * mask) * (1 - 0.35 * mask) + 0.35 * mask * red).clamp(0, 1)


def run_items(ctx: RunContext, items: Iterable[tuple[Path, dict]], work: Callable[[Path, dict], dict],
              description: str, done: Callable[[Path], bool] = Writer.is_done) -> list[dict]:
    """Run ``work(path, item)`` for every item and return one summary row each.

    ``path`` is where the item's outputs go (a folder, or one file for single-file items). A finished item
    (``done(path)``: by default its ``metrics.json`` exists) is read back, never redone; a failing item is recorded
    as a row with ``status=failed`` and an ``error.log``, and the others still run. User errors (bad input) stop the
    job: they would fail every item the same way.
    """
    rows = []
    items = list(items)
    for item_dir, item in track(items, description):
        if done(item_dir):
            rows.append({**item, "status": "done before"} | _read_row(item_dir))
            continue
        reset_peak_memory(ctx.device)
        try:
            row = work(item_dir, item)
            rows.append({**item, "status": "ok", **row})
        except DiginError:
            raise
        except Exception as err:  # one broken item must not cost the rest of the sweep
            log = item_dir / "error.log" if item_dir.suffix == "" else item_dir.with_suffix(".error.log")
            atomic_write_text(log, traceback.format_exc())
            print(f"digin: item {item_dir.relative_to(ctx.output_dir)} failed: {type(err).__name__}: {err}",
                  file=sys.stderr)
            rows.append({**item, "status": "failed", "error": f"{type(err).__name__}: {err}"})
        ctx.tracker.log({k: v for k, v in rows[-1].items() if isinstance(v, (int, float))})
    return rows


def _read_row(item_dir: Path) -> dict:
    try:
        return json.loads((item_dir / "metrics.json").read_text()).get("summary", {})
    except (OSError, ValueError):
        return {}


def save_optimisation(ctx: RunContext, item_dir: Path, result: OptimResult, caption: Callable[[dict], str],
                      metrics: dict) -> None:
    """Write init.png, best.png, the captioned iterate strip and (last, marking the item done) metrics.json."""
    writer = ctx.writer
    writer.save_image(item_dir, "init.png", result.initial.image)
    writer.save_image(item_dir, "best.png", result.best.image)
    writer.save_strip(item_dir, "iterates.png", [i.image for i in result.iterates],
                      [f"it {i.index}{' *' if i.index == result.best_index else ''}\n{caption(i.metrics)}"
                       for i in result.iterates])
    metrics = {**metrics, "best_iterate": result.best_index, "error": result.error,
               "seconds": round(result.seconds, 3), "peak_memory_mb": round(peak_memory_mb(ctx.device), 1),
               "iterates": [{"index": i.index, **i.metrics} for i in result.iterates]}
    ctx.tracker.log_images({f"{item_dir.relative_to(ctx.output_dir)}/best": result.best.image,
                            f"{item_dir.relative_to(ctx.output_dir)}/init": result.initial.image})
    writer.save_metrics(item_dir, metrics)


def finish(ctx: RunContext, rows: list[dict], title: str, columns: list[str] | None = None) -> dict:
    """summary.csv, the end-of-run table and the W&B summary; returns counts for status.json."""
    ctx.writer.write_summary(rows)
    print_table(title, rows, columns)
    counts = {"items": len(rows), "items_failed": sum(r.get("status") == "failed" for r in rows)}
    ctx.tracker.summary(counts)
    return counts
