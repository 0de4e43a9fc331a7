"""Prompt explanations in tasks (explain, hard_prompt, spurious, DiffExplainer): targets, item folders, the
explainer and the files an explanation leaves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from digin_cli.api.results import ExplanationResult
from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.neurons import check_feature


def check_prompt_settings(ctx: RunContext) -> None:
    """``task.prefix`` / ``num_tokens`` / ``init`` checked with the tokenizer alone, so a bad prefix or init word
    fails before the generator loads."""
    from digin_cli.generation.prompts import check_prompt
    from digin_cli.generation.tokenizer import clip_tokenizer

    task = ctx.cfg.task
    check_prompt(clip_tokenizer(str(ctx.cfg.paths.cache_dir)), str(task.prefix), int(task.num_tokens),
                 str(task.init))


def explanation_targets(ctx: RunContext, f: Classifier) -> list[dict]:
    """``task.classes`` x ``task.features`` x ``task.seeds`` as items: Eq. 3 (class only), Eq. 4 (feature only) or
    Eq. 5 (both). Unknown classes and out-of-range features fail here, before any optimisation."""
    task = ctx.cfg.task
    classes = [resolve_class(c, f.class_names) for c in task.classes]
    features = [check_feature(f, n, "task.features") for n in task.get("features", [])]
    if not classes and not features:
        raise DiginError("nothing to explain — set task.classes=[bee] and/or task.features=[870]")
    seeds = [int(s) for s in task.seeds]
    if not seeds:
        raise DiginError("task.seeds is empty — give at least one seed, e.g. task.seeds=[0]")
    return [{"class": f.class_names[c] if c is not None else None, "class_index": c, "feature": n, "seed": s}
            for c in (classes or [None]) for n in (features or [None]) for s in seeds]


def explanation_dir(ctx: RunContext, item: dict) -> Path:
    parts = [item["class"] if item["class"] is not None else "no_class"]
    if item["feature"] is not None:
        parts.append(f"feature_{item['feature']}")
    return ctx.writer.item_dir(*parts, f"seed_{item['seed']}")


def wandb_curve(ctx: RunContext, item_dir: Path):
    """Per-iterate callback logging the item's loss curve to W&B (keys prefixed by the item's folder)."""
    key = str(item_dir.relative_to(ctx.output_dir))

    def log(iterate) -> None:
        values = {f"{key}/loss": iterate.loss, f"{key}/iterate": iterate.index}
        if iterate.train_loss is not None:
            values[f"{key}/train_loss"] = iterate.train_loss
        ctx.tracker.log(values)

    return log


def save_result(ctx: RunContext, item_dir: Path, result: ExplanationResult) -> dict:
    """A method's explanation into its item folder through the run's writer; its first sample to W&B. Returns the
    summary row."""
    if len(result.samples):
        ctx.tracker.log_images({f"{item_dir.relative_to(ctx.output_dir)}/samples": result.samples[0]})
    result.save(item_dir, ctx.writer)
    return result.summary | ({"error": result.error} if result.error else {})


def run_explanations(ctx: RunContext, explain: Callable, description: str, title: str, columns: list[str]) -> dict:
    """The explain / hard_prompt loop: per (class, feature, seed) item, ``explain(method, item, callback)`` with the
    run's :class:`digin_cli.api.PromptExplainer` (Eq. 3 / 4 / 5, a new z per step, samples), then the item's files."""
    from digin_cli.api.explanations import PromptExplainer

    f = ctx.classifier("classifier")
    items = explanation_targets(ctx, f)
    check_prompt_settings(ctx)
    settings = ctx.optim_settings()
    method = PromptExplainer(ctx.generator, f, settings, settings, ctx.sampler(), progress=track)

    def work(item_dir, item):
        return save_result(ctx, item_dir, explain(method, item, wandb_curve(ctx, item_dir)))

    rows = run_items(ctx, [(explanation_dir(ctx, item), item) for item in items], work, description)
    return finish(ctx, rows, title, columns)
