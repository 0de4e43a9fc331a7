"""Time and peak memory of one DiG-IN optimisation step versus the number of DDIM steps T.

For each T in {5, 10, 20, 40} and checkpointing on/off, one fresh subprocess builds the generator and a classifier
pair, times a no-grad sampling pass (sample + decode), then times the optimisation loop itself (render with grad,
16-cutout disagreement loss on the last 3 steps, backward, Adam, z_T projection): step time = (run(n) − run(0)) / n.
Memory: the bytes autograd keeps for backward over one step (counted with saved-tensor hooks: exact and the same
on any device), and the peak: CUDA max allocated on GPU, peak RSS on CPU (a blunter gauge: allocator high-water
marks). Ratios are printed from numbers measured in the same invocation, since these machines are noisy.

    python scripts/bench_step.py                       # tiny on CPU (+ sd15_random on GPU when one is present)
    python scripts/bench_step.py --generator sd15_random --device cuda --steps 5 10 20 40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TARGET_MEMORY_RATIO, TARGET_STEP_RATIO = 1.10, 3.5


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(generator: str, device: str, T: int, checkpointing: bool, iters: int, resolution: int | None = None,
            memory_only: bool = False) -> dict:
    """One measurement, in this process (run by the parent in a fresh subprocess)."""
    import torch
    from omegaconf import OmegaConf

    from digin_cli.augment import Cutouts
    from digin_cli.classifiers.timm_zoo import TimmClassifier
    from digin_cli.classifiers.tiny import TinyClassifier
    from digin_cli.generation.models import load_generator
    from digin_cli.generation.sampler import DDIMSampler
    from digin_cli.objectives import Disagreement
    from digin_cli.optimize import DiginOptimizer, OptimSettings

    torch.manual_seed(0)
    cfg = OmegaConf.load(os.path.join(os.path.dirname(__file__), "..", "conf", "generator", f"{generator}.yaml"))
    cfg.num_steps = T
    if resolution:
        cfg.resolution = resolution
    dev = torch.device(device)
    sd = load_generator(cfg, dev)
    if generator == "tiny":
        f, g = TinyClassifier(seed=1), TinyClassifier(seed=2)
    else:  # real ImageNet architectures, random weights: no download needed
        f, g = TimmClassifier("convnext_base", pretrained=False), TimmClassifier("vit_small_patch16_224", pretrained=False)
    f, g = f.to(dev), g.to(dev)
    sampler = DDIMSampler(sd, checkpointing=checkpointing)
    z, cond, null = sd.initial_latent(0), sd.encode_prompt("a photograph of a koala"), sd.null_embedding()
    objective = Disagreement(f, g, 105, Cutouts(16, 0.3, 0.005))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def nograd_pass():
        with torch.no_grad():
            return sampler.decode(sampler.sample(z, cond, null).latents)

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    if not memory_only:
        nograd_pass()  # warm-up (kernels, allocator)
        nograd = statistics.median(timed(nograd_pass) for _ in range(iters))

    def loop(steps):
        return timed(lambda: DiginOptimizer(sampler, OptimSettings(steps=steps, loss_steps=3)).run(
            z, cond, null, objective))

    def autograd_saved_mb() -> float:
        """Bytes autograd keeps for backward over one training render + loss (unique storages, weights once)."""
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        opt = DiginOptimizer(sampler, OptimSettings(steps=1, loss_steps=3))
        z_T = z.clone().requires_grad_(True)
        delta = torch.zeros((T, *cond.shape), device=dev, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            latents, images = opt.render(z_T, cond + delta, null + delta)
            loss = sum(objective(img, True, lat)[0] for img, lat in zip(images, latents))
        loss.backward()
        return sum(storages.values()) / 2**20

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    saved_mb = autograd_saved_mb()
    if memory_only:
        out = {"generator": f"{generator}@{sd.resolution}", "device": device, "T": T, "checkpointing": checkpointing,
               "nograd_s": float("nan"), "step_s": float("nan"), "step_ratio": float("nan"),
               "autograd_saved_mb": saved_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if dev.type == "cuda":
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        return out
    loop(1)  # warm-up of the backward kernels
    base_rss = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev) / 2**20
    # One optimisation step = a run with one Adam step minus a run with none (both end with one evaluation pass);
    # medians over interleaved repeats damp the noise of a shared machine.
    with_step, without = [], []
    for _ in range(iters):
        without.append(loop(0))
        with_step.append(loop(1))
    step = statistics.median(with_step) - statistics.median(without)
    out = {"generator": f"{generator}@{sd.resolution}", "device": device, "T": T, "checkpointing": checkpointing,
           "nograd_s": nograd, "step_s": step, "step_ratio": step / nograd, "autograd_saved_mb": saved_mb,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "step_rss_rise_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss}
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["step_cuda_rise_mb"] = out["peak_cuda_mb"] - base_cuda
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", action="append", help="tiny | sd15_random (repeatable)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cpu for tiny, cuda for sd15_random)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--iters", type=int, default=3, help="repeats per timing (medians are reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--resolution", type=int, default=None, help="image size (default: the generator's)")
    parser.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--memory-only", action="store_true", help="one training render + backward per T, no timing")
    parser.add_argument("--json", help="also write all measurements to this file")
    parser.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        import torch

        torch.set_num_threads(args.threads)
        gen, dev, T, ckpt = args._child
        print(json.dumps(measure(gen, dev, int(T), ckpt == "1", args.iters, args.resolution, args.memory_only)))
        return

    import torch

    plan = args.generator or (["tiny", "sd15_random"] if torch.cuda.is_available() else ["tiny"])
    results = []
    for gen in plan:
        device = args.device or ("cuda" if gen != "tiny" and torch.cuda.is_available() else "cpu")
        if gen != "tiny" and device == "cpu" and args.device is None:
            print(f"skipping {gen}: it needs a GPU (pass --device cpu explicitly to force it)", file=sys.stderr)
            continue
        for ckpt in {"both": (True, False), "on": (True,), "off": (False,)}[args.checkpointing]:
            for T in args.steps:
                cmd = [sys.executable, __file__, "--_child", gen, device, str(T), "1" if ckpt else "0",
                       "--iters", str(args.iters), "--threads", str(args.threads)]
                if args.resolution:
                    cmd += ["--resolution", str(args.resolution)]
                if args.memory_only:
                    cmd.append("--memory-only")
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    results.append({"generator": gen, "device": device, "T": T, "checkpointing": ckpt, "error": err})
                else:
                    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"  measured {gen} T={T} checkpointing={ckpt}", file=sys.stderr)
    _report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _report(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="one optimisation step vs a no-grad sampling pass")
    for col in ("generator", "device", "T", "ckpt", "no-grad s", "step s", "step/no-grad", "autograd MB", "peak MB"):
        table.add_column(col)
    for r in results:
        if "error" in r:
            table.add_row(r["generator"], r["device"], str(r["T"]), str(r["checkpointing"]), "error", r["error"][:60],
                          "", "", "")
            continue
        peak = r.get("peak_cuda_mb", r["peak_rss_mb"])
        table.add_row(r["generator"], r["device"], str(r["T"]), str(r["checkpointing"]), f"{r['nograd_s']:.3f}",
                      f"{r['step_s']:.3f}", f"{r['step_ratio']:.2f}", f"{r['autograd_saved_mb']:.1f}", f"{peak:.0f}")
    console = Console()
    console.print(table)
    for gen in dict.fromkeys(r["generator"] for r in results):
        ok = {(r["T"], r["checkpointing"]): r for r in results if r["generator"] == gen and "error" not in r}
        if not ok:
            continue
        lo, hi = min(t for t, _ in ok), max(t for t, _ in ok)
        for ckpt in (True, False):
            if (lo, ckpt) in ok and (hi, ckpt) in ok:
                a, b = ok[(lo, ckpt)], ok[(hi, ckpt)]
                peak = "peak_cuda_mb" if "peak_cuda_mb" in a else "peak_rss_mb"
                console.print(f"{gen} checkpointing={ckpt}: autograd memory T={hi}/T={lo} = "
                              f"{b['autograd_saved_mb'] / a['autograd_saved_mb']:.2f}, peak memory T={hi}/T={lo} = "
                              f"{b[peak] / a[peak]:.2f} (target ≤ {TARGET_MEMORY_RATIO} with checkpointing); "
                              f"step/no-grad at T={hi}: {b['step_ratio']:.2f} (target ≤ {TARGET_STEP_RATIO})")


if __name__ == "__main__":
    main()
