"""DiffExplainer text explanations (Sec. 4.4): a hard prompt, i.e. vocabulary logits per learnable token through a
straight-through Gumbel softmax, optimised like ``task=explain``; the explanation is the decoded text (e.g. "a picture
of flower cluster" for "bee"), and the samples are generated from that text.
"""

from __future__ import annotations

from digin_cli.context import RunContext
from digin_cli.io.atomic import atomic_write_text
from digin_cli.tasks.common.explanations import run_explanations


def run(ctx: RunContext) -> dict:
    def hard_prompt(explainer, task, seed):
        return explainer.hard_prompt(str(task.prefix), int(task.num_tokens), str(task.init), seed, float(task.tau),
                                     bool(task.whole_words))

    def write_text(item_dir, explanation):  # the explanation itself: the decoded words its samples come from
        atomic_write_text(item_dir / "explanation.txt", explanation.text + "\n")

    return run_explanations(ctx, hard_prompt, "hard prompt", "DiffExplainer text explanations (hard prompts)",
                            ["class", "feature", "seed", "status", "text", "loss_first", "loss_last",
                             "samples_p_class"], after=write_text)
