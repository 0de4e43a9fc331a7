"""Time and memory of one DiG-IN optimisation step: versus T, checkpointing, the two-stage backward and compile.

Every configuration runs in a fresh subprocess that builds the generator and a classifier pair, then measures one
optimisation step (render with grad, 16-cutout disagreement loss on the last 3 steps, backward):
- memory: the bytes autograd keeps for backward (saved-tensor hooks; the peak of what is alive at once, weights
  excluded: exact and the same on any device), and the peak: CUDA max allocated on GPU; on CPU the rise of peak RSS
  over the RSS before the step (VmHWM is reset first). Run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed
  memory leaves the process: otherwise glibc keeps freed heap pages and RSS creeps by MBs per DDIM step.
- time (unless ``--memory-only``): a no-grad sampling pass (sample + decode) and the step, as
  (run(n) − run(0)) / n of the real loop (Adam, z_T projection included), medians over interleaved repeats.
Ratios are printed from numbers measured in the same invocation, since these machines are noisy.

    python scripts/bench_step.py                          # tiny on CPU vs T, checkpointing on/off
    MALLOC_MMAP_THRESHOLD_=65536 python scripts/bench_step.py --suite lean   # the lean-step before/after report
    python scripts/bench_step.py --generator sd15_random --device cuda --steps 5 10 20 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench_memory import SavedTensorMeter, peak_rss_mb, reset_peak_rss, rss_mb  # scripts/ is on sys.path
from bench_step_report import label, report

PAIRS = {"tiny": ("tiny_a", "tiny_b"), "resnet18": ("resnet18", "resnet18"),
         "convnext_vit": ("convnext_base", "vit_small_patch16_224")}


def _classifier(name: str, seed: int):
    import torch

    from digin_cli.classifiers.timm_zoo import TimmClassifier
    from digin_cli.classifiers.tiny import TinyClassifier

    if name.startswith("tiny"):
        return TinyClassifier(seed=seed)
    torch.manual_seed(seed)  # random weights, real architecture: no download needed
    return TimmClassifier(name, pretrained=False)


def measure_group(specs: list[dict]) -> list[dict]:
    """Configurations sharing generator, resolution, classifiers and device, measured one after the other in this
    process (run by the parent in a fresh subprocess): the models load once; each measurement resets the peak-RSS
    mark, and with MALLOC_MMAP_THRESHOLD_ set freed memory leaves the process between them."""
    import gc

    import torch

    from digin_cli.api.builders import preset  # composed as the CLI does (schema, fragments)
    from digin_cli.generation.models import load_generator

    spec = specs[0]
    torch.manual_seed(0)
    gen = spec["generator"]
    cfg = preset("generator", gen)
    if spec.get("resolution"):
        cfg.resolution = spec["resolution"]
    dev = torch.device(spec["device"])
    sd = load_generator(cfg, dev)
    names = PAIRS[spec["classifiers"]]
    f, g = (_classifier(n, s).to(dev) for n, s in zip(names, (1, 2)))
    if spec.get("classifier_ckpt"):
        for c in (f, g):
            if not c.enable_grad_checkpointing():
                raise SystemExit(f"{type(c.model).__name__} has no timm gradient checkpointing")
    results = []
    for spec in specs:
        gc.collect()
        results.append(measure(spec, sd, f, g))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def measure(spec: dict, sd, f, g) -> dict:
    """One configuration on already built models."""
    import torch

    from digin_cli.augment import Cutouts
    from digin_cli.generation.sampler import DDIMSampler
    from digin_cli.objectives import Disagreement
    from digin_cli.optimize import DiginOptimizer, OptimSettings, linear_weights

    torch.manual_seed(0)
    gen, T, dev = spec["generator"], spec["T"], sd.device
    sd.num_steps = T  # the sampler builds its own scheduler for T
    mode = {"true": True, "false": False, "auto": "auto"}[spec["checkpointing"]]
    sampler = DDIMSampler(sd, compile=spec.get("compile", False))  # checkpointing: the loop's setting
    z, cond, null = sd.initial_latent(0), sd.encode_prompt("a photograph of a koala"), sd.null_embedding()
    objective = Disagreement(f, g, 105, Cutouts(spec["cutouts"], 0.3, 0.005))
    settings = dict(loss_steps=3, checkpointing=mode, two_stage=spec["two_stage"], chunk=spec["chunk"],
                    memory_budget_gb=spec.get("budget_gb"))
    # One optimiser for every run of this configuration, as a task keeps one: "auto" measures its step once.
    optimizer = DiginOptimizer(sampler, OptimSettings(steps=1, **settings))
    out = {k: spec[k] for k in ("generator", "device", "T", "classifiers", "checkpointing", "two_stage", "chunk",
                                "cutouts", "section")}
    out.update(generator=f"{gen}@{sd.resolution}", compile=spec.get("compile", False),
               classifier_ckpt=spec.get("classifier_ckpt", False))

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

    def one_step(meter: SavedTensorMeter | None) -> None:
        """Render with grad + the training backward of the loop (no Adam), as DiginOptimizer.run does it."""
        z_T = z.clone().requires_grad_(True)
        dc = torch.zeros((T, *cond.shape), device=dev, requires_grad=True)
        du = torch.zeros((T, *null.shape), device=dev, requires_grad=True)
        c, u = cond + dc, null + du
        if optimizer.memory.plain_steps is None:
            optimizer.plan_checkpointing(z_T, c, u)
        ctx = meter.hooks() if meter else _null()
        with ctx:
            latents, images = optimizer.render(z_T, c, u)
            optimizer.training_backward(objective, images, latents, linear_weights(len(images)))

    t0 = time.perf_counter()
    nograd_pass()  # warm-up (kernels, allocator; compiles the no-grad graph with compile on)
    out["warmup_s"] = time.perf_counter() - t0
    if not spec["memory_only"]:
        out["nograd_s"] = statistics.median(timed(nograd_pass) for _ in range(spec["iters"]))
        out["first_step_s"] = timed(lambda: one_step(None))  # warm-up: backward kernels, the compiled backward
    # Memory of one step: the autograd meter (exact) and the process peak over the RSS before the step.
    base_rss = rss_mb()
    out["rss_reset"] = reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev) / 2**20
    meter = SavedTensorMeter(sd.unet, sd.vae, f, g)
    one_step(meter)
    out["autograd_peak_mb"] = meter.peak / 2**20
    out["peak_rss_mb"] = peak_rss_mb()
    out["step_rss_rise_mb"] = out["peak_rss_mb"] - base_rss
    out["plain_steps"] = optimizer.memory.plain_steps
    out["plain_decode"] = optimizer.memory.plain_decode
    out["step_bytes_mb"] = (optimizer.memory.step_bytes or 0) / 2**20
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["step_cuda_rise_mb"] = out["peak_cuda_mb"] - base_cuda
    if spec["memory_only"]:
        return out

    def loop(steps):
        optimizer.settings.steps = steps
        return timed(lambda: optimizer.run(z, cond, null, objective))

    # One optimisation step = a run with one Adam step minus a run with none (both end with one evaluation pass);
    # medians over interleaved repeats damp the noise of a shared machine.
    with_step, without = [], []
    for _ in range(spec["iters"]):
        without.append(loop(0))
        with_step.append(loop(1))
    out["step_s"] = statistics.median(with_step) - statistics.median(without)
    out["step_ratio"] = out["step_s"] / out["nograd_s"]
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


GROUP_KEYS = ("generator", "resolution", "classifiers", "classifier_ckpt", "compile", "device", "two_stage",
              "memory_only")


def run_child(specs: list[dict], threads: int, timeout: float | None = None) -> list[dict]:
    cmd = [sys.executable, __file__, "--_child", json.dumps(specs), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        done = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        return done + [{**spec, "error": f"timed out after {timeout:.0f} s"} for spec in specs[len(done):]]
    done = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    if proc.returncode:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        done += [{**spec, "error": err} for spec in specs[len(done):]]
    return done


def _spec(args, **over) -> dict:
    spec = dict(generator="tiny", device="cpu", T=20, classifiers="tiny", checkpointing="true", two_stage=True,
                chunk=args.chunk, cutouts=args.cutouts, compile=False, classifier_ckpt=False, budget_gb=None,
                resolution=args.resolution, memory_only=args.memory_only, iters=args.iters)
    spec.update(over)
    return spec


def lean_plan(args) -> list[dict]:
    """The before/after report of the lean step: memory vs T for three set-ups, then times of the modes."""
    steps = args.steps or [5, 20, 40]
    plan = []
    setups = [("tiny", "tiny", 256, False), ("tiny", "resnet18", 256, False), ("sd15_random", "convnext_vit", 128, True)]
    for gen, pair, res, mem_only in setups if not args.no_memory_rows else ():
        for T in (args.sd15_steps or steps) if gen == "sd15_random" else steps:
            for two_stage in (False, True):
                plan.append(_spec(args, generator=gen, classifiers=pair, resolution=res, T=T, two_stage=two_stage,
                                  memory_only=True, section="memory"))
    # timm gradient checkpointing of the classifiers on top (T does not matter for the classifier's memory)
    for two_stage in (False, True) if not args.no_memory_rows else ():
        plan.append(_spec(args, generator="sd15_random", classifiers="convnext_vit", resolution=128,
                          T=(args.sd15_steps or steps)[0],
                          two_stage=two_stage, memory_only=True, classifier_ckpt=True, section="memory"))
    # Times at each T; compile (minutes of inductor code generation on a CPU) at the first T only.
    for n, T in enumerate(args.time_steps):
        for ckpt, two_stage, comp in (("true", False, False), ("true", True, False), ("false", True, False),
                                      ("auto", True, False), ("true", True, True), ("auto", True, True)):
            if comp and (n or args.no_compile_rows):
                continue
            plan.append(_spec(args, generator="tiny", classifiers="tiny", resolution=256, T=T, checkpointing=ckpt,
                              two_stage=two_stage, compile=comp, memory_only=False, section="time",
                              budget_gb=1e6 if ckpt == "auto" else None))
    # What timm gradient checkpointing in the classifiers costs once the two-stage backward holds one chunk.
    for classifier_ckpt in (False, True):
        plan.append(_spec(args, generator="tiny", classifiers="resnet18", resolution=256, T=args.time_steps[0],
                          classifier_ckpt=classifier_ckpt, memory_only=False, section="time"))
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("sweep", "lean"), default="sweep",
                        help="sweep: T x checkpointing (default); lean: the two-stage / auto / compile report")
    parser.add_argument("--generator", action="append", help="tiny | sd15_random (repeatable; sweep)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cpu for tiny, cuda for sd15_random)")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="T values (sweep: 5 10 20 40; lean: 5 20 40)")
    parser.add_argument("--time-steps", type=int, nargs="+", default=[5, 10], help="lean: T values of the timings")
    parser.add_argument("--no-compile-rows", action="store_true", help="lean: leave out the compile timings")
    parser.add_argument("--no-memory-rows", action="store_true", help="lean: only the timing section")
    parser.add_argument("--iters", type=int, default=3, help="repeats per timing (medians are reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--resolution", type=int, default=None, help="image size (default: the generator's)")
    parser.add_argument("--checkpointing", choices=("both", "on", "off", "auto"), default="both")
    parser.add_argument("--classifiers", choices=tuple(PAIRS), default=None, help="pair (default: tiny for tiny)")
    parser.add_argument("--backward", choices=("two_stage", "single", "both"), default="two_stage")
    parser.add_argument("--classifier-ckpt", action="store_true", help="timm gradient checkpointing in the classifiers")
    parser.add_argument("--chunk", type=int, default=4, help="cutouts per chunk in the two-stage backward")
    parser.add_argument("--cutouts", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--memory-only", action="store_true", help="one training step per configuration, no timing")
    parser.add_argument("--child-timeout", type=float, default=None, help="seconds per measuring process")
    parser.add_argument("--jobs", type=int, default=1, help="memory-only processes run side by side")
    parser.add_argument("--sd15-steps", type=int, nargs="+", default=None, help="lean: T values for sd15_random")
    parser.add_argument("--json", help="also write all measurements to this file")
    parser.add_argument("--report", metavar="JSON", help="print the report of a --json file again, measure nothing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        import torch

        torch.set_num_threads(args.threads)
        measure_group(json.loads(args._child))
        return

    if args.report:
        with open(args.report) as f:
            report(json.load(f), args.suite)
        return

    import torch

    if args.suite == "lean":
        plan = lean_plan(args)
        if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
            print("note: MALLOC_MMAP_THRESHOLD_ is not set: CPU peak RSS will include memory glibc keeps",
                  file=sys.stderr)
    else:
        plan = []
        for gen in args.generator or (["tiny", "sd15_random"] if torch.cuda.is_available() else ["tiny"]):
            device = args.device or ("cuda" if gen != "tiny" and torch.cuda.is_available() else "cpu")
            if gen != "tiny" and device == "cpu" and args.device is None:
                print(f"skipping {gen}: it needs a GPU (pass --device cpu explicitly to force it)", file=sys.stderr)
                continue
            modes = {"both": ("true", "false"), "on": ("true",), "off": ("false",), "auto": ("auto",)}
            backward = {"both": (False, True), "single": (False,), "two_stage": (True,)}[args.backward]
            for ckpt in modes[args.checkpointing]:
                for two_stage in backward:
                    for T in args.steps or [5, 10, 20, 40]:
                        plan.append(_spec(args, generator=gen, device=device, T=T, checkpointing=ckpt,
                                          classifiers=args.classifiers or ("tiny" if gen == "tiny" else "convnext_vit"),
                                          two_stage=two_stage, compile=args.compile, section="sweep",
                                          classifier_ckpt=args.classifier_ckpt))
    groups: dict[tuple, list[dict]] = {}
    for spec in plan:
        if args.device and args.suite == "lean":
            spec["device"] = args.device
        groups.setdefault(tuple(spec.get(k) for k in GROUP_KEYS), []).append(spec)
    results = []
    lock = __import__("threading").Lock()

    def run(specs):
        outcome = run_child(specs, args.threads, args.child_timeout)
        with lock:
            for r in outcome:
                results.append(r)
                print(f"  measured {label(r)} T={r['T']}: " + ("error " + r["error"] if "error" in r else
                      f"autograd {r['autograd_peak_mb']:.1f} MB, rise "
                      f"{r.get('step_cuda_rise_mb', r['step_rss_rise_mb']):.0f} MB"
                      + (f", step {r['step_s']:.2f} s" if "step_s" in r else "")), file=sys.stderr, flush=True)
            if args.json:  # written as it goes: a long run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)

    # Memory-only groups may run side by side (each process reads its own peak); timed groups run one at a time
    # (beside the memory ones when --jobs > 1: ratios between timed rows stay comparable, absolute times do not).
    from concurrent.futures import ThreadPoolExecutor

    memory = [g for g in groups.values() if g[0]["memory_only"]]
    timed = [g for g in groups.values() if not g[0]["memory_only"]]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        timing = pool.submit(lambda: [run(specs) for specs in timed]) if args.jobs > 1 else None
        list(pool.map(run, memory))
        if timing is None:
            for specs in timed:
                run(specs)
        else:
            timing.result()
    report(results, args.suite)


if __name__ == "__main__":
    main()
