"""DiffExplainer text explanations (Sec. 4.4): a hard prompt, i.e. vocabulary logits per learnable token through a
straight-through Gumbel softmax, optimised like ``task=explain``; the explanation is the decoded text (e.g. "a picture
of flower cluster" for "bee"), and the samples are generated from that text.
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.io.atomic import atomic_write_text
from digin_cli.tasks.common.explanations import run_explanations

KEY_IMAGES = ["samples.png", "loss.png", "iterates.png"]
ITEM_KEYS = ["classes", "features", "seeds"]  # task keys that only choose items (resume)


def run(ctx: RunContext) -> dict:
    from digin_cli.generation.prompts import vocabulary_ids
    from digin_cli.generation.tokenizer import clip_tokenizer

    task = ctx.cfg.task
    # Checked with the tokenizer alone, before any model loads: a multi-token or missing word is one line.
    vocabulary = vocabulary_ids(clip_tokenizer(str(ctx.cfg.paths.cache_dir)), task.get("vocabulary"))
    tau_end = task.get("tau_end")

    def hard_prompt(explainer, task, seed):
        return explainer.hard_prompt(str(task.prefix), int(task.num_tokens), str(task.init), seed, float(task.tau),
                                     bool(task.whole_words), vocabulary, None if tau_end is None else float(tau_end))

    def write_text(item_dir, explanation):  # the explanation itself: the decoded words its samples come from
        atomic_write_text(item_dir / "explanation.txt", explanation.text + "\n")

    return run_explanations(ctx, hard_prompt, "hard prompt", "DiffExplainer text explanations (hard prompts)",
                            ["class", "feature", "seed", "status", "text", "initial_text", "top_prob",
                             "loss_first", "loss_last", "samples_p_class"], after=write_text)
