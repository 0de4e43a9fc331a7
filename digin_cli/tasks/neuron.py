"""Neuron visualisation (DiG-IN Sec. 6, Eq. 6): generated images that maximise or minimise one feature φ_n.

Per (neuron, direction, seed): start from SD's image for a prompt and optimise z_T and the per-step deltas on ∓φ_n
(:class:`digin_cli.objectives.FeatureActivation`), reporting the confidence in the neuron's associated class. The
prompt is ``task.prompt``, or the winner among ``task.objects`` (each scored by the mean φ_n of
``task.object_samples`` plain samples of "a photograph of a <object>"; ``objects.csv`` keeps every mean) — this
replaces the authors' CogAgent step — or, failing both, the associated class's name. With reference images the
``task.top_images`` real images that activate the neuron most are shown under the generated ones in ``neuron.png``:
the baseline the paper compares against.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

from digin_cli.context import RunContext
from digin_cli.data import load_inputs
from digin_cli.device import peak_memory_mb
from digin_cli.errors import DiginError
from digin_cli.features import top_activating
from digin_cli.objectives import FeatureActivation
from digin_cli.optimize import DiginOptimizer
from digin_cli.tasks.common import finish, run_items, save_optimisation
from digin_cli.tasks.common.inputs import crop_fraction
from digin_cli.tasks.common.neurons import class_files, directions, features_of, folder_files, neuron_targets
from digin_cli.tasks.common.real_images import require_imagenet_train

KEY_IMAGES = ["neuron_*/neuron.png", "neuron_*/*/seed_*/best.png"]
ITEM_KEYS = ["neurons", "top_features_of", "top_k", "direction", "seeds"]  # task keys that only choose items (resume)


def objects_of(task) -> list[str]:
    """``task.objects``: a list, or a text file with one object a line (blank lines and ``#`` comments skipped)."""
    objects = task.objects
    if isinstance(objects, str):
        path = Path(objects).expanduser()
        if not path.is_file():
            raise DiginError(f"object list not found: {path} — pass task.objects=<text file, one object a line> "
                             "or a list, e.g. task.objects='[sand,water]'")
        objects = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        objects = [o for o in objects if o and not o.startswith("#")]
        if not objects:
            raise DiginError(f"object list {path} is empty — put one object a line in it")
    return [str(o) for o in objects or []]


def reference_files(ctx: RunContext, f) -> list[Path] | None:
    task = ctx.cfg.task
    if task.reference_images:
        return folder_files(ctx, task.reference_images, "task.reference_images")
    if task.reference_class is not None:
        from digin_cli.classifiers import resolve_class

        return class_files(ctx, f, resolve_class(task.reference_class, f.class_names))
    return None


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task
    signs = directions(task)
    seeds = [int(s) for s in task.seeds]
    if not seeds:
        raise DiginError("task.seeds must name at least one seed, e.g. task.seeds='[0,1]'")
    objects = objects_of(task)
    if task.top_features_of is not None or (task.reference_class is not None and not task.reference_images):
        require_imagenet_train(ctx.cfg.paths.imagenet_train)  # before any model loads
    f = ctx.classifier("classifier")
    targets = neuron_targets(ctx, f)
    if not task.prompt and not objects and any(label is None for _, label in targets):
        raise DiginError("no starting prompt for a neuron without an associated class — pass task.prompt='a "
                         "photograph of a ...' or task.objects=[...]")
    references = reference_files(ctx, f)  # listed (and so checked) before the generator loads
    sd, sampler = ctx.generator, ctx.sampler()
    optimizer = DiginOptimizer(sampler, ctx.optim_settings())
    null, cutouts = sd.null_embedding(), ctx.cutouts()
    chosen: dict[tuple[int, int], str] = {}

    def object_means(n: int) -> dict[str, float]:
        path = ctx.writer.item_dir(f"neuron_{n}") / "objects.csv"
        if path.is_file():  # a resumed run keeps the earlier choice
            with path.open(newline="", encoding="utf-8") as fh:
                return {row["object"]: float(row["mean_phi"]) for row in csv.DictReader(fh)}
        means, rows = {}, []
        z = torch.cat([sd.initial_latent(s) for s in range(int(task.object_samples))])
        for obj in objects:
            prompt = task.prompt_template.format(obj)
            with torch.no_grad():
                cond = sd.encode_prompt(prompt).expand(len(z), -1, -1)
                images = sampler.decode(sampler.sample(z, cond, null.expand(len(z), -1, -1)).latents)
                phis = f.features(images)[:, n]
            means[obj] = phis.mean().item()
            rows.append({"object": obj, "prompt": prompt, "mean_phi": means[obj],
                         **{f"phi_seed_{s}": v for s, v in enumerate(phis.tolist())}})
        ctx.writer.write_summary(rows, str(path.relative_to(ctx.writer.root)))
        return means

    def prompt_for(n: int, label: int | None, sign: int) -> str:
        if task.prompt:
            return str(task.prompt)
        if objects:
            if (n, sign) not in chosen:
                means = object_means(n)
                chosen[(n, sign)] = max(means, key=lambda o: sign * means[o])
            return task.prompt_template.format(chosen[(n, sign)])
        return task.prompt_template.format(f.class_names[label])

    def work(item_dir, item):
        n, label, sign = item["neuron"], item["class_index"], item["sign"]
        prompt = prompt_for(n, label, sign)
        objective = FeatureActivation(f, n, sign, cutouts, report_class=label)
        result = optimizer.run(sd.initial_latent(item["seed"]), sd.encode_prompt(prompt), null, objective,
                               description=f"neuron {n} {item['direction']} · seed {item['seed']}")
        init, best = result.initial.metrics, result.best.metrics
        with torch.no_grad():
            predicted = int(f(result.best.image.to(ctx.device)).argmax())
        summary = {"prompt": prompt, "phi_init": init["phi"], "phi_best": best["phi"],
                   "p_class_init": init.get("p_class"), "p_class_best": best.get("p_class"),
                   "predicted": f.class_names[predicted], "best_iterate": result.best_index,
                   "seconds": round(result.seconds, 2), "peak_memory_mb": round(peak_memory_mb(ctx.device), 1)}
        caption = (lambda m: f"phi {m['phi']:.3g}" + (f" p {m['p_class']:.2g}" if "p_class" in m else ""))
        save_optimisation(ctx, item_dir, result, caption,
                          {k: v for k, v in item.items() if k != "sign"} | {"prompt": prompt, "summary": summary})
        return summary | ({"error": result.error} if result.error else {})

    items = [(ctx.writer.item_dir(f"neuron_{n}", name, f"seed_{s}"),
              {"neuron": n, "class": f.class_names[label] if label is not None else "", "class_index": label,
               "direction": name, "sign": sign, "seed": s})
             for n, label in targets for name, sign in signs for s in seeds]
    rows = run_items(ctx, items, work, "neurons")
    for n, label in targets:
        write_grid(ctx, f, n, label, [(d, r) for (d, r) in zip(items, rows) if r["neuron"] == n], references)
    return finish(ctx, [{k: v for k, v in r.items() if k not in ("sign", "class_index")} for r in rows],
                  "neuron visualisation: φ_n", ["neuron", "class", "direction", "seed", "status", "phi_init",
                                                "phi_best", "p_class_best", "predicted", "seconds"])


def write_grid(ctx: RunContext, f, n: int, label: int | None, done: list, references: list[Path] | None) -> None:
    """``neuron_<n>/neuron.png``: a row of best images per direction, then the top activating real images."""
    rows, titles = [], []
    for name in dict.fromkeys(item["direction"] for (_, item), _ in done):
        tiles = [(Image.open(d / "best.png").convert("RGB"), f"seed {item['seed']}\nphi {float(r['phi_best']):.3g}")
                 for (d, item), r in done if item["direction"] == name and (d / "best.png").is_file()
                 and r.get("phi_best") not in (None, "")]
        if tiles:
            rows.append(([t for t, _ in tiles], [c for _, c in tiles]))
            titles.append(f"{'maximise' if name == 'max' else 'minimise'} neuron {n}")
    if references:
        feats = features_of(ctx, f, references, "reference features")
        top, values = top_activating(feats, n, int(ctx.cfg.task.top_images))
        res = int(ctx.cfg.generator.resolution)
        rows.append(([load_inputs(str(references[i]), res, crop_fraction=crop_fraction(ctx))[0].image for i in top],
                     [f"{references[i].name[:18]}\nphi {v:.3g}" for i, v in zip(top, values)]))
        titles.append(f"top {len(top)} real images (of {len(references)})")
    if rows:
        title = f"neuron {n}" + (f" (associated class {f.class_names[label]})" if label is not None else "")
        ctx.writer.save_grid(ctx.writer.item_dir(f"neuron_{n}"), "neuron.png", rows, titles, title)
