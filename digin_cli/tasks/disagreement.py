"""Classifier disagreement (DiG-IN Sec. 4, Eq. 3): images that classifier f calls y and classifier g does not.

Per (class, seed): start from SD's image for "a photograph of a <class>" and optimise z_T, the per-step prompt
embeddings and null-text embeddings to maximise p_f(y|x) − p_g(y|x). Two classifiers with different label sets
(e.g. a user's Food-101 model against another) are compared on the class both name alike.
"""

from __future__ import annotations

from digin_cli.classifiers import readable, resolve_in_both, same_label_set
from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.objectives import Disagreement
from digin_cli.optimize import DiginOptimizer
from digin_cli.tasks.common import finish, run_items, save_optimisation

KEY_IMAGES = ["init.png", "best.png"]  # report.html: SD's image, then the one the classifiers disagree on most
ITEM_KEYS = ["classes", "seeds"]  # task keys that only choose items (resume)


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task
    seeds = [int(s) for s in task.seeds]
    if not seeds or not task.classes:
        raise DiginError("task.classes and task.seeds must each name at least one value, e.g. "
                         "task.classes='[koala]' task.seeds='[0,1]'")
    f, g = ctx.classifier("classifier"), ctx.classifier("classifier2")
    targets = [resolve_in_both(c, f.class_names, g.class_names) for c in task.classes]
    y_g = dict(targets)  # f's class index -> the same class's index in g's label set
    mapped = not same_label_set(f.class_names, g.class_names)
    sd = ctx.generator
    sampler = ctx.sampler()
    optimizer = DiginOptimizer(sampler, ctx.optim_settings(), progress=track)
    null = sd.null_embedding()
    cutouts = ctx.cutouts()

    def work(item_dir, item):
        prompt = task.prompt.format(readable(item["class"]))
        z_T, noise = sampler.seeded_start(item["seed"])  # LCM also needs its inter-step noise
        result = optimizer.run(z_T, sd.encode_prompt(prompt), null,
                               Disagreement(f, g, item["class_index"], cutouts, target_g=y_g[item["class_index"]]),
                               description=f"{item['class']} · seed {item['seed']}", noise=noise)
        init, best = result.initial.metrics, result.best.metrics
        summary = {"p_f_init": init["p_f"], "p_g_init": init["p_g"], "p_f_best": best["p_f"],
                   "p_g_best": best["p_g"], "best_iterate": result.best_index, "seconds": round(result.seconds, 2)}
        save_optimisation(ctx, item_dir, result, lambda m: f"p_f {m['p_f']:.3g} / p_g {m['p_g']:.3g}",
                          {**item, "prompt": prompt, "summary": summary})
        return summary | ({"error": result.error} if result.error else {})

    # The class index is part of the folder: ImageNet names repeat ("missile" is 657 and 744).
    items = [(ctx.writer.item_dir(f"{y}_{f.class_names[y]}", f"seed_{s}"),
              {"class": f.class_names[y], "class_index": y, "seed": s}
              | ({"class2": g.class_names[y_g[y]], "class2_index": y_g[y]} if mapped else {}))
             for y, _ in targets for s in seeds]
    rows = run_items(ctx, items, work, "disagreement")
    return finish(ctx, rows, "classifier disagreement: p_f ↑ − p_g ↓",
                  ["class", *(["class2"] if mapped else []), "seed", "status", "p_f_init", "p_g_init", "p_f_best",
                   "p_g_best", "best_iterate", "seconds"])
