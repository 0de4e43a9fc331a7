"""Seconds for the two costs of a visual counterfactual: null-text inversion, and one counterfactual.

Builds the generator (tiny on CPU, or the real SD 1.5 architecture with random weights on a GPU), a classifier and
the weight-free attention segmenter, then times on one synthetic image: the inversion (DDIM + null-text, the cache
bypassed), preparing the image (attention-storing reconstruction + mask), and one counterfactual (the no-grad
prompt-to-prompt schedule search plus the optimisation). Random weights make the images meaningless; the timings
are those of the real architecture. It also reports the bytes of source cross-attention stored per image: before
(every one of the T steps, kept on the CPU and copied back to the device per layer per step) and now (only the steps
of the largest injection window and the mask steps, kept on the run's device).

    python scripts/bench_vce.py                                   # tiny, CPU
    python scripts/bench_vce.py --generator sd15_random --device cuda
    python scripts/bench_vce.py --compile --repeat 2   # torch.compile'd UNet with the prompt-to-prompt processors:
                                                       # the first counterfactual pays the compilation
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="tiny", help="tiny | sd15_random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-steps", type=int, default=None, help="DDIM steps (default: the generator config's)")
    parser.add_argument("--opt-steps", type=int, default=20, help="optimisation steps (authors: 20)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", nargs="?", const=True, default=False,
                        help="torch.compile the UNet (optionally a backend name, default inductor)")
    parser.add_argument("--repeat", type=int, default=1, help="time the counterfactual this many times")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from digin_cli.augment import Cutouts
    from digin_cli.classifiers.timm_zoo import TimmClassifier
    from digin_cli.classifiers.tiny import TinyClassifier
    from digin_cli.counterfactual import RealImageEditor
    from digin_cli.generation.attention import AttentionController, attention_control
    from digin_cli.generation.inversion import InversionCache, invert
    from digin_cli.api.builders import preset  # composed as the CLI does (schema, fragments)
    from digin_cli.generation.models import load_generator
    from digin_cli.generation.sampler import DDIMSampler, SamplerHooks
    from digin_cli.objectives import Counterfactual, ForegroundAwareDistance
    from digin_cli.optimize import OptimSettings
    from digin_cli.segmentation.base import AttentionSegmenter

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = preset("generator", args.generator)
    if args.num_steps:
        cfg.num_steps = args.num_steps
    sd = load_generator(cfg, device)
    sampler = DDIMSampler(sd, compile=args.compile)
    f = TinyClassifier(seed=0) if args.generator == "tiny" else TimmClassifier("convnext_base", pretrained=False)
    f = f.to(device)
    res = sd.resolution
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    blob = ((xx ** 2 + yy ** 2) < 0.3).float()
    image = torch.stack([0.2 + 0.7 * blob, 0.5 - 0.2 * blob, 0.8 - 0.6 * blob])[None].to(device)
    caption = "an image of a red fox"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        sync()
        t0 = time.perf_counter()
        invert(sd, sampler, image, caption)
        sync()
        timings["null-text inversion"] = time.perf_counter() - t0
        editor = RealImageEditor(sd, sampler, AttentionSegmenter(), InversionCache(tmp), sd_key=args.generator)
        t0 = time.perf_counter()
        prepared = editor.prepare(image, caption, "red fox")  # includes a second, cached-miss inversion
        sync()
        timings["prepare (inversion + attention store + mask)"] = time.perf_counter() - t0
        stored_now = _stored_bytes(prepared.controller)
        # The former store: every step, on the CPU (one more no-grad reconstruction pass, not timed).
        every_step = AttentionController.for_sampler(sampler, mode="store", store_device="cpu")
        with attention_control(sd.unet, every_step), torch.no_grad():
            sampler.sample(prepared.inversion.z_T, prepared.inversion.cond, prepared.inversion.uncond,
                           hooks=SamplerHooks(cross_attention_kwargs=every_step.cross_attention_kwargs))
        stored_before = _stored_bytes(every_step)
        inv = prepared.inversion
        distance = ForegroundAwareDistance(inv.original, inv.latent_original, prepared.px_mask, prepared.latent_mask)
        objective = Counterfactual(f, 277, distance, Cutouts(16), start=None)
        for n in range(args.repeat):
            t0 = time.perf_counter()
            result, schedule, _ = editor.edit(prepared, "tabby cat", objective, OptimSettings(steps=args.opt_steps))
            sync()
            run = f", run {n + 1}" if args.repeat > 1 else ""
            timings[f"one counterfactual (6-candidate search + {args.opt_steps} steps{run})"] = (
                time.perf_counter() - t0)
    compiled = f", compile={args.compile}" if args.compile else ""
    table = Table(title=f"visual counterfactual cost: {args.generator} on {args.device}, T={sampler.num_steps}"
                        + compiled)
    table.add_column("stage")
    table.add_column("seconds")
    for stage, seconds in timings.items():
        table.add_row(stage, f"{seconds:.2f}")
    Console().print(table)
    T, kept = sampler.num_steps, len(prepared.controller.steps)
    memory = Table(title="source cross-attention stored per image (per-head maps, every cross-attention layer)")
    for column in ("store", "steps", "where", "MiB"):
        memory.add_column(column)
    memory.add_row("before: every step", f"{T}/{T}", "CPU (copied to the device per layer per step)",
                   f"{stored_before / 2**20:.2f}")
    memory.add_row(f"now: i/T < {editor.max_injection} + mask steps", f"{kept}/{T}", f"{args.device}",
                   f"{stored_now / 2**20:.2f}")
    Console().print(memory)
    print(f"attention bytes per image: before {stored_before} B, after {stored_now} B "
          f"({stored_before / stored_now:.2f}x less)")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def _stored_bytes(controller) -> int:
    return sum(m.numel() * m.element_size() for m in controller.maps.values())


if __name__ == "__main__":
    main()
