"""Pieces every task shares: the per-item loop (this job's shard, resume by config hash, per-item seeding, failures
recorded, a partial report page after each item), writing an optimisation's results, and the end of a run.

What only some tasks share lives beside this module: :mod:`.real_images` (vce, neuron_cf, npca), :mod:`.neurons`
(neuron, neuron_cf, npca, spurious) and :mod:`.explanations` (explain, hard_prompt, spurious).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from digin_cli.api.results import OptimisationResult
from digin_cli.configs import config_hash
from digin_cli.context import RunContext
from digin_cli.device import (
    item_seed,
    peak_memory_mb,
    reset_peak_memory,
    seed_everything,
)
from digin_cli.errors import DiginError
from digin_cli.io import report
from digin_cli.io.atomic import atomic_write_text
from digin_cli.io.progress import print_table, track
from digin_cli.io.writer import Writer
from digin_cli.optimize import OptimResult
from digin_cli.task_registry import item_keys, key_images
from digin_cli.tasks.common.inputs import skipped_rows


def require_invertible_sampler(ctx: RunContext) -> None:
    """Tasks on real images invert them with DDIM (null-text inversion); LCM's noisy steps have no inverse."""
    sampler = ctx.cfg.generator.get("sampler", "ddim")
    if sampler != "ddim":
        raise DiginError(f"task={ctx.cfg.task.name} inverts real images, which needs the deterministic DDIM sampler, "
                         f"not generator.sampler={sampler} — use a DDIM generator (e.g. generator=sd15, or "
                         "generator.sampler=ddim without an LCM LoRA)")


def run_items(ctx: RunContext, items: Iterable[tuple], work: Callable[..., dict], description: str,
              done: Callable[[Path], bool] = Writer.is_done) -> list[dict]:
    """Run ``work(path, item)`` for every ``(path, item)`` and return one summary row each.

    ``item`` (a dict) is public: it starts the item's summary row. An entry ``(path, item, payload)`` carries a
    private payload as well (e.g. the image and classes the item edits), handed over as ``work(path, item,
    payload)`` and never written.

    ``path`` is where the item's outputs go (a folder, or one file for single-file items). Only this job's shard of
    the items runs (:func:`shard`). A finished item (``done(path)``: by default its ``metrics.json`` exists) is read
    back, never redone, if its metrics carry this config's hash, and refused (one line) if not; a failing item is
    recorded as a row with ``status=failed`` and an ``error.log``, and the others still run. User errors (bad input)
    stop the job: they would fail every item the same way.

    Before each item, ``ctx.rng`` (cutouts, noise) and the global RNGs are reseeded from (``seed``, the item's path
    relative to the job folder): an item's result is the same alone, after other items, in a resumed or a sharded
    sweep.
    """
    rows = []
    items = shard(ctx, list(items))
    digest = config_hash(ctx.cfg, item=True, item_keys=item_keys(ctx.cfg.task))
    ctx.writer.stamp["config_hash"] = digest  # every item's metrics.json carries it, whichever task writes it
    check_safety = _safety(ctx)  # loaded before any item: a missing checker fails in seconds, not after item one
    ctx.tracker.start()  # a task calls run_items once its inputs are checked: only now may a W&B run appear
    for item_dir, item, *payload in track(items, description):
        if done(item_dir):
            metrics = _read_metrics(item_dir)
            if metrics is not None and metrics.get("config_hash") != digest:
                raise DiginError(f"{item_dir} holds a result of a different configuration (config hash "
                                 f"{metrics.get('config_hash') or 'missing'}, this one {digest}) — pass a new "
                                 "hydra.sweep.dir= (or hydra.run.dir=) to keep both, or delete that folder")
            rows.append({**item, "status": "done before"} | (metrics or {}).get("summary", {}))
            check_safety(item_dir, again=False)
            continue
        reset_peak_memory(ctx.device)
        seed = item_seed(int(ctx.cfg.seed), item_dir.relative_to(ctx.output_dir).as_posix())
        ctx.rng.manual_seed(seed)
        seed_everything(seed)
        try:
            row = work(item_dir, item, *payload)
            check_safety(item_dir)
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
        _report(ctx)  # a partial page after every item: a killed job still shows what it finished
    return rows


def _safety(ctx: RunContext) -> Callable[..., None]:
    """``safety=true``: Stable Diffusion's safety checker over each finished item's images, recorded in the item's
    safety.json (report.html blurs what it flags; :mod:`digin_cli.safety`). Off by default: it loads a CLIP ViT-L."""
    if not ctx.cfg.get("safety", False):
        return lambda item_dir, again=True: None
    from digin_cli.safety import DEFAULT_CHECKER, SAFETY, cached_checker, check_file, check_folder

    checker = cached_checker(str(ctx.cfg.get("safety_checker") or DEFAULT_CHECKER), str(ctx.device))

    def check(item_dir: Path, again: bool = True) -> None:
        folder = item_dir.is_dir()
        record = item_dir / SAFETY if folder else item_dir.with_name(f"{item_dir.name}.{SAFETY}")
        if again or not record.exists():
            (check_folder if folder else check_file)(checker, item_dir, checker.name)

    return check


def shard(ctx: RunContext, items: list) -> list:
    """This job's share of ``items`` under ``task.shard_index`` / ``task.num_shards``: every ``num_shards``-th item
    from ``shard_index`` on (the authors' ``index % world_size`` split), so shards are disjoint, balanced, and their
    union is the unsharded list, whatever machine runs which shard."""
    num = int(ctx.cfg.task.get("num_shards", 1) or 1)
    index = int(ctx.cfg.task.get("shard_index", 0) or 0)
    return items[index::num] if num > 1 else items


def _read_metrics(item_dir: Path) -> dict | None:
    try:
        metrics = json.loads((item_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def save_optimisation(ctx: RunContext, item_dir: Path, result: OptimResult, caption: Callable[[dict], str],
                      metrics: dict, best_name: str = "best.png") -> None:
    """Write init.png, the selected iterate (``best_name``: real-image tasks call it counterfactual.png, once), the
    captioned iterate strip and (last, marking the item done) metrics.json."""
    save_result(ctx, item_dir, OptimisationResult(result, metrics, caption, best_name, peak_memory_mb(ctx.device)))


def save_result(ctx: RunContext, item_dir: Path, result: OptimisationResult) -> None:
    """A method's result into the item's folder (:meth:`OptimisationResult.save`, through the run's writer, which
    stamps the config hash), its start and selected images to W&B."""
    key = item_dir.relative_to(ctx.output_dir)
    ctx.tracker.log_images({f"{key}/best": result.image, f"{key}/init": result.initial_image})
    result.save(item_dir, ctx.writer)


def finish(ctx: RunContext, rows: list[dict], title: str, columns: list[str] | None = None) -> dict:
    """summary.csv (with the inputs ``task.skip_unreadable`` left out, as ``skipped``), the end-of-run table and the
    W&B summary; returns counts for status.json."""
    skipped = skipped_rows(ctx)
    rows = [*rows, *skipped]
    ctx.writer.write_summary(rows)
    print_table(title, rows, columns)
    counts = {"items": len(rows) - len(skipped), "items_failed": sum(r.get("status") == "failed" for r in rows)}
    if skipped:
        counts["inputs_skipped"] = len(skipped)
    ctx.tracker.summary(counts)
    if ctx.tracker.enabled:  # report.html's key images, one row per item
        table = lambda: report.key_image_table(ctx.output_dir, key_images(ctx.cfg.task))  # noqa: E731
        report.refresh(lambda: ctx.tracker.log_table("key_images", *table()), what="the W&B key_images table")
    return counts


def _report(ctx: RunContext) -> None:
    report.refresh(lambda: report.write_report(ctx.output_dir, key_images(ctx.cfg.task)))
