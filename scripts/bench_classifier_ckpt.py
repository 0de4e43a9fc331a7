"""Memory of one DiG-IN optimisation step with and without gradient checkpointing inside the classifier.

The training loss scores the images of the last k = 3 steps through 16 cutouts each: 48 classifier passes whose
activations autograd keeps for backward, unless the classifier checkpoints them (timm ``set_grad_checkpointing``,
``classifier.grad_checkpointing`` in ``conf/classifier``; the zoo's ``auto`` turns it on only with the single
backward, ``optimizer.two_stage=false``; this script's objective scores all cutouts in one piece, as that backward does).
Each setting runs one optimisation step (``DiginOptimizer``, ``optimizer.steps=1``) in its own process, because peak
RSS is per process, and reports:

* the bytes autograd saves for backward inside the training loss (saved-tensor hooks, classifier weights excluded):
  exact and independent of the allocator;
* the peak memory of the process (CUDA: max allocated; CPU: peak RSS, run with ``MALLOC_MMAP_THRESHOLD_=65536``
  so freed blocks go back to the OS) and its growth during the step over the RSS after loading the models.

Random weights (``pretrained=false``, ``generator=sd15_random``): memory only, no timing claims.

    MALLOC_MMAP_THRESHOLD_=65536 python scripts/bench_classifier_ckpt.py          # convnext_b, sd15_random@128, CPU
    python scripts/bench_classifier_ckpt.py --classifier vit_b --device cuda --resolution 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from bench_memory import rss_mb  # scripts/ is on sys.path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def child(args: argparse.Namespace, checkpointing: bool) -> dict:
    import torch

    from digin_cli.augment import Cutouts
    from digin_cli.classifiers import build_classifier
    from digin_cli.device import peak_memory_mb
    from digin_cli.api.builders import preset  # composed as the CLI does (schema, fragments)
    from digin_cli.generation.models import load_generator
    from digin_cli.generation.sampler import DDIMSampler
    from digin_cli.optimize import DiginOptimizer, OptimSettings

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    gen = preset("generator", args.generator)
    gen.resolution, gen.num_steps = args.resolution, args.num_steps
    sd = load_generator(gen, device)
    clf_cfg = preset("classifier", args.classifier)
    clf_cfg.pretrained, clf_cfg.grad_checkpointing = False, checkpointing
    f = build_classifier(clf_cfg, device)
    weights = {p.untyped_storage().data_ptr() for p in f.parameters()}
    cutouts = Cutouts(args.cutouts)
    saved = {"bytes": 0}

    def objective(images, augment, latents=None):
        if not augment:
            with torch.no_grad():
                return -f(images).log_softmax(-1)[:, 1].mean(), {}
        storages: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = -f(cutouts(images, f.input_size)).log_softmax(-1)[:, 1].mean()
        saved["bytes"] += sum(storages.values())
        return loss, {}

    sampler = DDIMSampler(sd, checkpointing=True)
    z_T, cond, uncond = sd.initial_latent(0), sd.encode_prompt("a photograph of a goldfish"), sd.null_embedding()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = rss_mb()
    DiginOptimizer(sampler, OptimSettings(steps=1, loss_steps=args.loss_steps)).run(z_T, cond, uncond, objective)
    return {"checkpointing": checkpointing, "saved_mb": saved["bytes"] / 2**20, "peak_mb": peak_memory_mb(device),
            "rss_before_step_mb": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="convnext_b", help="a conf/classifier timm config")
    parser.add_argument("--generator", default="sd15_random", help="tiny | sd15_random")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=5,
                        help="DDIM steps (the sampler is checkpointed per step: memory is flat in T)")
    parser.add_argument("--loss-steps", type=int, default=3)
    parser.add_argument("--cutouts", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--_child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(args, args._child == "on")))
        return

    from rich.console import Console
    from rich.table import Table

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"),
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    passthrough = sys.argv[1:]
    rows = {}
    for setting in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--_child", setting], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            killed = out.returncode < 0 and -out.returncode == 9
            sys.exit(f"bench_classifier_ckpt: the checkpointing={setting} run "
                     f"{'was killed (out of memory?)' if killed else 'failed: ' + out.stderr.strip()[-300:]} — "
                     "free memory or pass fewer --cutouts / a smaller --resolution")
        rows[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    peak = "peak CUDA allocated" if args.device.startswith("cuda") else "peak RSS"
    table = Table(title=f"one optimisation step, {args.classifier} (random weights) on {args.generator}@"
                        f"{args.resolution}, {args.loss_steps} images x {args.cutouts} cutouts, T={args.num_steps}, "
                        f"{args.device}")
    for column in ("classifier checkpointing", "autograd saved in the loss, MiB", f"{peak}, MiB",
                   "step growth, MiB"):
        table.add_column(column)
    for setting, r in rows.items():
        table.add_row(setting, f"{r['saved_mb']:.1f}", f"{r['peak_mb']:.0f}",
                      f"{r['peak_mb'] - r['rss_before_step_mb']:.0f}" if not args.device.startswith("cuda") else "-")
    Console().print(table)
    off, on = rows["off"], rows["on"]
    print(f"classifier checkpointing: autograd-saved {off['saved_mb']:.1f} -> {on['saved_mb']:.1f} MiB "
          f"({off['saved_mb'] / max(on['saved_mb'], 1e-9):.1f}x less), {peak} {off['peak_mb']:.0f} -> "
          f"{on['peak_mb']:.0f} MiB ({off['peak_mb'] / on['peak_mb']:.2f}x)")


if __name__ == "__main__":
    main()
