"""Classifier disagreement (DiG-IN Sec. 4, Eq. 3): images that classifier f calls y and classifier g does not.

Config -> components -> method -> writer: per (class, seed), :class:`digin_cli.api.Disagreement` optimises z_T, the
per-step prompt and null-text embeddings from SD's image for "a photograph of a <class>" to maximise
p_f(y|x) − p_g(y|x); each result is saved into its item folder. Two classifiers with different label sets (e.g. a
user's Food-101 model against another) are compared on the class both name alike.
"""

from __future__ import annotations

from digin_cli.api.disagreement import Disagreement
from digin_cli.classifiers import resolve_in_both, same_label_set
from digin_cli.context import RunContext
from digin_cli.errors import DiginError
from digin_cli.io.progress import track
from digin_cli.tasks.common import finish, run_items, save_result


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
    method = Disagreement(ctx.generator, f, g, settings=ctx.optim_settings(), cutouts=ctx.cutouts(),
                          prompt=task.prompt, sampler=ctx.sampler(), progress=track)

    def work(item_dir, item):
        result = method.generate(item["class_index"], item["seed"], rng=ctx.rng, class_g=y_g[item["class_index"]])
        save_result(ctx, item_dir, result)
        return result.summary | ({"error": result.error} if result.error else {})

    # The class index is part of the folder: ImageNet names repeat ("missile" is 657 and 744).
    items = [(ctx.writer.item_dir(f"{y}_{f.class_names[y]}", f"seed_{s}"),
              {"class": f.class_names[y], "class_index": y, "seed": s}
              | ({"class2": g.class_names[y_g[y]], "class2_index": y_g[y]} if mapped else {}))
             for y, _ in targets for s in seeds]
    rows = run_items(ctx, items, work, "disagreement")
    return finish(ctx, rows, "classifier disagreement: p_f ↑ − p_g ↓",
                  ["class", *(["class2"] if mapped else []), "seed", "status", "p_f_init", "p_g_init", "p_f_best",
                   "p_g_best", "best_iterate", "seconds"])
