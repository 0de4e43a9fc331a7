"""DiffExplainer text explanations (Sec. 4.4): a hard prompt, i.e. vocabulary logits per learnable token through a
straight-through Gumbel softmax, optimised like ``task=explain``; the explanation is the decoded text (e.g. "a picture
of flower cluster" for "bee"), and the samples are generated from that text.
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.explainer import explanation_objective
from digin_cli.io.atomic import atomic_write_text
from digin_cli.tasks.common import finish, run_items
from digin_cli.tasks.common.explanations import (explanation_dir, explanation_targets, prompt_explainer,
                                                 save_explanation, wandb_curve)

KEY_IMAGES = ["samples.png", "loss.png", "iterates.png"]
ITEM_KEYS = ["classes", "features", "seeds"]  # task keys that only choose items (resume)


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task
    f = ctx.classifier("classifier")
    items = explanation_targets(ctx, f)
    explainer = prompt_explainer(ctx)

    def work(item_dir, item):
        objective = explanation_objective(f, item["class_index"], item["feature"], float(task.feature_weight))
        prompt = explainer.hard_prompt(str(task.prefix), int(task.num_tokens), str(task.init), item["seed"],
                                       float(task.tau), bool(task.whole_words))
        name = " · ".join(str(v) for v in (item["class"], item["feature"]) if v is not None)
        explanation = explainer.explain(prompt, objective, item["seed"], int(task.num_samples),
                                        f"{name} · seed {item['seed']}", callback=wandb_curve(ctx, item_dir))
        atomic_write_text(item_dir / "explanation.txt", explanation.text + "\n")
        return save_explanation(ctx, item_dir, item, explanation)

    rows = run_items(ctx, [(explanation_dir(ctx, item), item) for item in items], work, "hard prompt")
    return finish(ctx, rows, "DiffExplainer text explanations (hard prompts)",
                  ["class", "feature", "seed", "status", "text", "loss_first", "loss_last", "samples_p_class"])
