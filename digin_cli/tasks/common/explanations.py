"""Prompt explanations in tasks (explain, hard_prompt, spurious, DiffExplainer): targets, item folders, the
explainer and the files an explanation leaves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from digin_cli.classifiers import Classifier, resolve_class
from digin_cli.context import RunContext
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.neurons import check_feature


def prompt_explainer(ctx: RunContext):
    """The run's :class:`~digin_cli.explainer.PromptExplainer`; prompt settings are checked with the tokenizer
    alone first, so a bad prefix or init word fails before the generator loads."""
    from digin_cli.explainer import PromptExplainer
    from digin_cli.generation.prompts import check_prompt
    from digin_cli.generation.tokenizer import clip_tokenizer

    task = ctx.cfg.task
    check_prompt(clip_tokenizer(str(ctx.cfg.paths.cache_dir)), str(task.prefix), int(task.num_tokens),
                 str(task.init))
    return PromptExplainer(ctx.generator, ctx.sampler(), ctx.optim_settings(), progress=track)


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


def explanation_caption(m: dict) -> str:
    parts = [f"p {m['p_class']:.3g}"] if "p_class" in m else []
    if "phi" in m:
        parts.append(f"phi {m['phi']:.3g}")
    return " · ".join(parts) or f"loss {m['loss']:.3g}"


def state_caption(state: dict | None) -> str:
    """A hard prompt's argmax words and their probability under an iterate's image, and the sampled words its
    training image was generated from when they differ."""
    if state is None:
        return ""
    line = f"\n{state['words']} {min(state['top_prob']):.2g}"
    return line + (f"\n(drew {state['sampled']})" if state["sampled"] not in (None, state["words"]) else "")


def text_path(states: list[dict | None]) -> str:
    """The argmax words each time they changed, e.g. "0: gradient · 12: honey · 40: bee" (report.html, summary)."""
    path, last = [], None
    for index, state in enumerate(states):
        if state is not None and state["words"] != last:
            path.append(f"{index}: {state['words']}")
            last = state["words"]
    return " · ".join(path)


def save_explanation(ctx: RunContext, item_dir: Path, item: dict, explanation, per_row: int = 5,
                     extra_summary: dict | None = None, extra_metrics: dict | None = None) -> dict:
    """prompt.safetensors, samples.png (confidence / φ under each), loss.png, iterates.png, then metrics.json.

    ``extra_summary`` / ``extra_metrics``: a task's own results about the explanation (e.g. spurious' object
    fractions), stored in the same metrics.json so the item is done only once they are written too."""
    from safetensors.torch import save as safetensors_bytes

    from digin_cli.io.atomic import atomic_save_image, atomic_write_bytes
    from digin_cli.io.plots import line_chart

    writer, result, prompt = ctx.writer, explanation.result, explanation.prompt
    learned = prompt.token_embeddings(sample=False).detach().float().cpu().clone()
    tensors = {"token_embeddings": learned, "input_ids": prompt.input_ids.cpu().contiguous(),
               **{k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()}}
    meta = {"prefix": prompt.prefix, "num_tokens": str(prompt.num_tokens), "slots": json.dumps(prompt.slots),
            "kind": type(prompt).__name__, **({"text": explanation.text} if explanation.text is not None else {})}
    atomic_write_bytes(item_dir / "prompt.safetensors", safetensors_bytes(tensors, metadata=meta))
    captions = [explanation_caption(m) for m in explanation.sample_metrics]
    images = list(explanation.samples)
    if images:
        rows = [(images[i:i + per_row], captions[i:i + per_row]) for i in range(0, len(images), per_row)]
        target = " / ".join(str(v) for v in (item.get("class"), item.get("feature")) if v is not None)
        learned = f"{prompt.prefix} + {prompt.num_tokens} learned token(s)".strip()
        title = f"{target}: {explanation.text or learned}"
        writer.save_grid(item_dir, "samples.png", rows, title=title)
    losses = [i.loss for i in result.iterates]
    train = [i.train_loss for i in result.iterates]
    atomic_save_image(item_dir / "loss.png", line_chart({"loss (plain)": losses, "training loss": train},
                                                        title="loss per optimisation step (a new z each step)"))
    states = list(explanation.prompt_states or [])
    states += [None] * (len(result.iterates) - len(states))  # a run stopped by a non-finite loss
    kept = [i for i in result.iterates if i.image is not None]
    writer.save_strip(item_dir, "iterates.png", [i.image for i in kept],
                      [f"it {i.index}\n{explanation_caption(i.metrics)}{state_caption(states[i.index])}"
                       for i in kept])
    mean = {k: sum(m[k] for m in explanation.sample_metrics) / len(explanation.sample_metrics)
            for k in (explanation.sample_metrics[0] if explanation.sample_metrics else {})}
    summary = {**{f"samples_{k}": v for k, v in mean.items()}, "loss_first": losses[0], "loss_last": losses[-1],
               "seconds": round(result.seconds, 2),
               **({"text": explanation.text} if explanation.text is not None else {}), **(extra_summary or {})}
    if states and states[0] is not None:
        summary |= {"initial_text": states[0]["text"], "top_prob": round(min(prompt.state()["top_prob"]), 4),
                    "text_per_iterate": text_path(states)}
    metrics = {**item, **(extra_metrics or {}), "summary": summary, "nearest_tokens": prompt.nearest_tokens(5),
               "text": explanation.text, "embedding_norms": prompt.norms(), "selected_iterate": result.best_index,
               "error": result.error, "seconds": round(result.seconds, 3),
               "peak_memory_mb": round(peak_memory_mb(ctx.device), 1),
               "sample_seeds": explanation.sample_seeds, "samples": explanation.sample_metrics,
               "iterates": [{"index": i.index, "train_loss": i.train_loss, **i.metrics, **(state or {})}
                            for i, state in zip(result.iterates, states)]}
    if images:
        ctx.tracker.log_images({f"{item_dir.relative_to(ctx.output_dir)}/samples": images[0]})
    writer.save_metrics(item_dir, metrics)
    return summary | ({"error": result.error} if result.error else {})


def run_explanations(ctx: RunContext, make_prompt: Callable, description: str, title: str, columns: list[str],
                     after: Callable | None = None) -> dict:
    """The explain / hard_prompt loop: per (class, feature, seed) item, the Eq. 3 / 4 / 5 objective, a prompt from
    ``make_prompt(explainer, task, seed)``, optimisation with a new z per step, samples, then the item's files
    (``after(item_dir, explanation)`` adds a task's own before ``metrics.json`` marks the item done)."""
    from digin_cli.explainer import explanation_objective

    task = ctx.cfg.task
    f = ctx.classifier("classifier")
    items = explanation_targets(ctx, f)
    explainer = prompt_explainer(ctx)

    def work(item_dir, item):
        objective = explanation_objective(f, item["class_index"], item["feature"], float(task.feature_weight))
        name = " · ".join(str(v) for v in (item["class"], item["feature"]) if v is not None)
        explanation = explainer.explain(make_prompt(explainer, task, item["seed"]), objective, item["seed"],
                                        int(task.num_samples), f"{name} · seed {item['seed']}",
                                        callback=wandb_curve(ctx, item_dir))
        if after is not None:
            after(item_dir, explanation)
        return save_explanation(ctx, item_dir, item, explanation)

    rows = run_items(ctx, [(explanation_dir(ctx, item), item) for item in items], work, description)
    return finish(ctx, rows, title, columns)
