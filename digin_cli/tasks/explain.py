"""DiffExplainer explanations (Sec. 3.2, Eq. 3-5): a soft prompt optimised so that its images drive a class (Eq. 3),
a penultimate feature (Eq. 4) or both (Eq. 5), with a new z every step; then samples from fresh seeds.

Per (class, feature, seed): [SOS, task.prefix, task.num_tokens learnable embeddings, EOS] through the generator's
sampler (LCM-LoRA by default, ``generator=sd15`` for DDIM); outputs the learned embeddings, their nearest tokens and
``task.num_samples`` images with the classifier's confidence (and φ_f) under each.
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.explainer import explanation_objective
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
        prompt = explainer.soft_prompt(str(task.prefix), int(task.num_tokens), str(task.init), item["seed"])
        name = " · ".join(str(v) for v in (item["class"], item["feature"]) if v is not None)
        explanation = explainer.explain(prompt, objective, item["seed"], int(task.num_samples),
                                        f"{name} · seed {item['seed']}", callback=wandb_curve(ctx, item_dir))
        return save_explanation(ctx, item_dir, item, explanation)

    rows = run_items(ctx, [(explanation_dir(ctx, item), item) for item in items], work, "explain")
    return finish(ctx, rows, "DiffExplainer explanations (soft prompts)",
                  ["class", "feature", "seed", "status", "loss_first", "loss_last", "samples_p_class",
                   "samples_phi", "seconds"])
