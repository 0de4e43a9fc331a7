"""Neuron visualisation (DiG-IN Sec. 6, Eq. 6): generated images that maximise or minimise one feature φ_n.

Per (neuron, direction, seed): start from SD's image for a prompt and optimise z_T and the per-step deltas on ∓φ_n
(:class:`digin_cli.objectives.FeatureActivation`), reporting the confidence in the neuron's associated class. The
prompt is ``task.prompt``, or the winner among ``task.objects`` (each scored by the mean φ_n of
``task.object_samples`` plain samples of "a photograph of a <object>" from seeds disjoint from the optimisation
seeds; ``objects.csv`` keeps every mean; ``auto``: the nouns a vision-language model names in the neuron's top
activating training images, the authors' CogAgent step), or, failing both, the associated class's name
(``task.pairs``: the authors' class-neuron pairs). ``task.keep_object`` pins the object's foreground in the first
SD sample for the first 30 % of the steps, as the authors' script. The ``task.top_images`` real images that activate
the neuron most (of the whole ``paths.imagenet_train``, or ``task.reference_images``) are shown under the generated
ones in ``neuron.png``: the baseline the paper compares against.
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from digin_cli.api.neurons import OBJECT_SEED_BASE, NeuronVisualiser, check_keep_words, object_scores
from digin_cli.context import RunContext
from digin_cli.data import load_inputs
from digin_cli.errors import DiginError
from digin_cli.features import classifier_key, top_activating_in_folders
from digin_cli.io.progress import track
from digin_cli.segmentation import build_segmenter
from digin_cli.tasks.common import finish, run_items, save_result
from digin_cli.tasks.common.inputs import crop_fraction
from digin_cli.tasks.common.neurons import (check_feature, directions, feature_cache, folder_files, neuron_targets,
                                            object_lister)
from digin_cli.captioning.object_words import caption_name, mask_words
from digin_cli.tasks.common.real_images import require_imagenet_train



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


def neuron_pairs(ctx: RunContext, f) -> list[tuple[int, int | None]]:
    """``task.pairs`` ([[class, neuron], ...], the authors' class-neuron pairs) or the targets of
    :func:`neuron_targets` (``task.neurons`` / ``task.top_features_of``)."""
    from digin_cli.classifiers import resolve_class

    pairs = list(ctx.cfg.task.get("pairs") or [])
    for pair in pairs:
        if len(pair) != 2:
            raise DiginError(f"task.pairs entries are [class, neuron], got {list(pair)} — e.g. "
                             "task.pairs='[[fiddler crab,870]]'")
    if pairs:
        return [(check_feature(f, n, "task.pairs"), resolve_class(c, f.class_names)) for c, n in pairs]
    return neuron_targets(ctx, f)


def real_image_folders(ctx: RunContext) -> list[Path] | None:
    """Where the top activating real images come from: ``task.reference_images`` (one folder), else every class
    folder of ``paths.imagenet_train`` (the whole training set, as the authors), else nowhere."""
    task, train = ctx.cfg.task, ctx.cfg.paths.get("imagenet_train")
    if task.reference_images:
        folder_files(ctx, task.reference_images, "task.reference_images")  # checked (exists, holds images) up front
        return [Path(str(task.reference_images)).expanduser()]
    if train:
        require_imagenet_train(train)
        root = Path(str(train)).expanduser()
        return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return None


def run(ctx: RunContext) -> dict:
    task = ctx.cfg.task
    signs = directions(task)
    seeds = [int(s) for s in task.seeds]
    if not seeds:
        raise DiginError("task.seeds must name at least one seed, e.g. task.seeds='[0,1]'")
    auto = str(task.objects) == "auto"
    objects = [] if auto else objects_of(task)
    scoring = [OBJECT_SEED_BASE + s for s in range(int(task.object_samples))]
    if set(scoring) & set(seeds):
        raise DiginError(f"task.seeds {sorted(set(scoring) & set(seeds))} are object-scoring seeds (from "
                         f"{OBJECT_SEED_BASE}) — pick optimisation seeds below {OBJECT_SEED_BASE}")
    keep = bool(task.get("keep_object", False))
    if keep and (ctx.cfg.segmentation.get("name", "none") == "none" or not ctx.cfg.segmentation.get("_target_")):
        raise DiginError("task.keep_object pins the object's mask, but segmentation=none gives none — pass "
                         "segmentation=sam_hq (or sam / attention; tiny_sam for tests), or task.keep_object=false")
    if task.top_features_of is not None or auto:
        require_imagenet_train(ctx.cfg.paths.imagenet_train)  # before any model loads
    lister = object_lister(ctx) if auto else None
    f = ctx.classifier("classifier")
    targets = neuron_pairs(ctx, f)
    pair_mode = bool(task.get("pairs"))
    if not task.prompt and not objects and not auto and any(label is None for _, label in targets):
        raise DiginError("no starting prompt for a neuron without an associated class — pass task.prompt='a "
                         "photograph of a ...' or task.objects=[...]")
    if keep and task.prompt and not task.get("mask_words"):
        raise DiginError("task.keep_object with task.prompt needs the object's words — pass task.mask_words=<words "
                         "of the prompt naming the object>")
    k_real = max(int(task.top_images), int(task.get("auto_images", 0)) if auto else 0)
    folders = real_image_folders(ctx) if k_real else None
    real = ({} if folders is None else
            top_activating_in_folders(f, folders, {n: n for n in dict.fromkeys(n for n, _ in targets)}, k_real,
                                      int(ctx.cfg.generator.resolution), feature_cache(ctx),
                                      classifier_key(ctx.cfg.classifier), int(task.feature_batch_size),
                                      crop_fraction(ctx)))
    folder_of = (lambda n, label: ctx.writer.item_dir(f"class_{label}_neuron_{n}")) if pair_mode else \
        (lambda n, label: ctx.writer.item_dir(f"neuron_{n}"))
    sd, sampler = ctx.generator, ctx.sampler()
    segmenter = build_segmenter(ctx.cfg.segmentation, ctx.device) if keep else None
    method = NeuronVisualiser(sd, f, ctx.optim_settings(), ctx.cutouts(), segmenter, str(task.prompt_template),
                              int(task.object_samples), float(task.keep_until), float(task.mask_steps), sampler,
                              progress=track)
    chosen: dict[tuple[int, int | None, int], str] = {}

    def candidates(n: int, folder: Path) -> list[str]:
        if not auto:
            return objects
        found = lister.objects([p for p, _ in real.get(n, [])[:int(task.auto_images)]], folder)
        if not found:
            raise DiginError(f"the object lister found no objects in neuron {n}'s top activating images — pass "
                             "task.objects=[...] or another captioner.model")
        return found[:int(task.max_objects)]

    def object_means(n: int, folder: Path) -> dict[str, float]:
        path = folder / "objects.csv"
        if path.is_file():  # a resumed run keeps the earlier choice
            with path.open(newline="", encoding="utf-8") as fh:
                return {row["object"]: float(row["mean_phi"]) for row in csv.DictReader(fh)}
        rows = object_scores(sd, sampler, f, n, candidates(n, folder), str(task.prompt_template),
                             int(task.object_samples))
        ctx.writer.write_summary(rows, str(path.relative_to(ctx.writer.root)))
        return {row["object"]: row["mean_phi"] for row in rows}

    def prompt_for(n: int, label: int | None, sign: int) -> tuple[str, str | None]:
        """The starting prompt and the words naming its object (for keep_object)."""
        override = task.get("mask_words")
        if task.prompt:
            return str(task.prompt), (str(override) if override else None)
        if objects or auto:
            if (n, label, sign) not in chosen:
                means = object_means(n, folder_of(n, label))
                chosen[(n, label, sign)] = max(means, key=lambda o: sign * means[o])
            obj = chosen[(n, label, sign)]
            return task.prompt_template.format(obj), mask_words(obj, override)
        name = caption_name(f.class_names, label)
        return task.prompt_template.format(name), mask_words(name, override)

    def work(item_dir, item):
        n, label = item["neuron"], item["class_index"]
        prompt, words = prompt_for(n, label, item["sign"])
        if keep and words:
            check_keep_words(prompt, words, "task.mask_words")  # the API's check, named as the command line sets it
        result = method.visualise(n, item["direction"], prompt, seed=item["seed"], report_class=label,
                                  keep_words=words if keep else None, rng=ctx.rng)
        save_result(ctx, item_dir, result)
        return result.summary | ({"error": result.error} if result.error else {})

    items = [(folder_of(n, label) / name / f"seed_{s}",
              {"neuron": n, "class": f.class_names[label] if label is not None else "", "class_index": label,
               "direction": name, "sign": sign, "seed": s})
             for n, label in targets for name, sign in signs for s in seeds]
    rows = run_items(ctx, items, work, "neurons")
    for n, label in targets:
        write_grid(ctx, f, n, label, folder_of(n, label),
                   [(d, r) for (d, r) in zip(items, rows) if r["neuron"] == n and d[1]["class_index"] == label],
                   real.get(n, [])[:int(task.top_images)], folders)
    return finish(ctx, [{k: v for k, v in r.items() if k not in ("sign", "class_index")} for r in rows],
                  "neuron visualisation: φ_n", ["neuron", "class", "direction", "seed", "status", "phi_init",
                                                "phi_best", "p_class_best", "predicted", "seconds"])


def write_grid(ctx: RunContext, f, n: int, label: int | None, folder: Path, done: list, real: list,
               sources: list[Path] | None) -> None:
    """``<neuron folder>/neuron.png``: a row of best images per direction, then the top activating real images."""
    rows, titles = [], []
    for name in dict.fromkeys(item["direction"] for (_, item), _ in done):
        tiles = [(Image.open(d / "best.png").convert("RGB"), f"seed {item['seed']}\nphi {float(r['phi_best']):.3g}")
                 for (d, item), r in done if item["direction"] == name and (d / "best.png").is_file()
                 and r.get("phi_best") not in (None, "")]
        if tiles:
            rows.append(([t for t, _ in tiles], [c for _, c in tiles]))
            titles.append(f"{'maximise' if name == 'max' else 'minimise'} neuron {n}")
    if real:
        res = int(ctx.cfg.generator.resolution)
        rows.append(([load_inputs(str(p), res, crop_fraction=crop_fraction(ctx))[0].image for p, _ in real],
                     [f"{p.name[:18]}\nphi {v:.3g}" for p, v in real]))
        where = "the reference folder" if len(sources or []) == 1 else "paths.imagenet_train"
        titles.append(f"top {len(real)} real images (of {where})")
    if rows:
        title = f"neuron {n}" + (f" (associated class {f.class_names[label]})" if label is not None else "")
        ctx.writer.save_grid(folder, "neuron.png", rows, titles, title)
