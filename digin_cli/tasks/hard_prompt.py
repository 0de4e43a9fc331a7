"""DiffExplainer text explanations (Sec. 4.4): a hard prompt, i.e. vocabulary logits per learnable token through a
straight-through Gumbel softmax, optimised like ``task=explain``; the explanation is the decoded text (e.g. "a picture
of flower cluster" for "bee"), and the samples are generated from that text
(:meth:`digin_cli.api.PromptExplainer.explain_text`; explanation.txt holds the words).
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.tasks.common.explanations import run_explanations

KEY_IMAGES = ["samples.png", "loss.png", "iterates.png"]
ITEM_KEYS = ["classes", "features", "seeds"]  # task keys that only choose items (resume)


def run(ctx: RunContext) -> dict:
    from digin_cli.generation.prompts import vocabulary_ids
    from digin_cli.generation.tokenizer import clip_tokenizer

    task = ctx.cfg.task
    # Checked with the tokenizer alone, before any model loads: a multi-token or missing word is one line.
    vocabulary_ids(clip_tokenizer(str(ctx.cfg.paths.cache_dir)), task.get("vocabulary"))
    tau_end = task.get("tau_end")

    def explain(method, item, callback):
        return method.explain_text(item["class_index"], item["feature"], seed=item["seed"], prefix=str(task.prefix),
                                   num_tokens=int(task.num_tokens), init=str(task.init), tau=float(task.tau),
                                   tau_end=None if tau_end is None else float(tau_end),
                                   whole_words=bool(task.whole_words), vocabulary=task.get("vocabulary"),
                                   num_samples=int(task.num_samples), feature_weight=float(task.feature_weight),
                                   callback=callback)

    return run_explanations(ctx, explain, "hard prompt", "DiffExplainer text explanations (hard prompts)",
                            ["class", "feature", "seed", "status", "text", "initial_text", "top_prob",
                             "loss_first", "loss_last", "samples_p_class"])
