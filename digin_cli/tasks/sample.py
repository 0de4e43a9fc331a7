"""Plain generation, no optimisation: the "SD init" row of the paper's Fig. 3.

One PNG per (prompt, seed), named ``<prompt-slug>__seed<seed>.png``, from the same sampler, seeds and DDIM settings
the optimisation tasks start from.
"""

from __future__ import annotations

import torch

from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.io.writer import slug
from digin_cli.tasks.common import finish, run_items


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task
    prompts, seeds = [str(p) for p in task.prompts], [int(s) for s in task.seeds]
    if not prompts or not seeds:
        raise DiginError("task.prompts and task.seeds must each name at least one value, e.g. "
                         "task.prompts='[a photograph of a koala]' task.seeds='[0]'")
    sd = ctx.generator
    sampler = ctx.sampler()
    null = sd.null_embedding()

    @torch.no_grad()
    def work(path, item):
        z_T, noise = sampler.seeded_start(item["seed"])  # LCM also needs its inter-step noise
        latents = sampler.sample(z_T, sd.encode_prompt(item["prompt"]), null, noise=noise).latents
        ctx.writer.save_image(path.parent, path.name, sampler.decode(latents))
        return {}

    items = [(ctx.output_dir / f"{slug(p)}__seed{s}.png", {"prompt": p, "seed": s, "file": f"{slug(p)}__seed{s}.png"})
             for p in prompts for s in seeds]
    rows = run_items(ctx, items, work, "sampling", done=lambda path: path.exists())
    return finish(ctx, rows, "samples", ["prompt", "seed", "status", "file"])
