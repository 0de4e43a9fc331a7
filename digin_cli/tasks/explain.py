"""DiffExplainer explanations (Sec. 3.2, Eq. 3-5): a soft prompt optimised so that its images drive a class (Eq. 3),
a penultimate feature (Eq. 4) or both (Eq. 5), with a new z every step; then samples from fresh seeds.

Per (class, feature, seed), :meth:`digin_cli.api.PromptExplainer.explain`: [SOS, task.prefix, task.num_tokens
learnable embeddings, EOS] through the generator's sampler (LCM-LoRA by default, ``generator=sd15`` for DDIM);
outputs the learned embeddings, their nearest tokens and ``task.num_samples`` images with the classifier's
confidence (and φ_f) under each.
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.tasks.common.explanations import run_explanations

KEY_IMAGES = ["samples.png", "loss.png", "iterates.png"]
ITEM_KEYS = ["classes", "features", "seeds"]  # task keys that only choose items (resume)


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task

    def explain(method, item, callback):
        return method.explain(item["class_index"], item["feature"], seed=item["seed"], prefix=str(task.prefix),
                              num_tokens=int(task.num_tokens), init=str(task.init), num_samples=int(task.num_samples),
                              feature_weight=float(task.feature_weight), callback=callback)

    return run_explanations(ctx, explain, "explain", "DiffExplainer explanations (soft prompts)",
                            ["class", "feature", "seed", "status", "loss_first", "loss_last", "samples_p_class",
                             "samples_phi", "seconds"])
