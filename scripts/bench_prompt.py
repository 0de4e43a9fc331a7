"""Seconds per soft-prompt optimisation step (DiffExplainer, task=explain): LCM (4 steps) vs DDIM (20 steps).

Both runs happen in this one process, one after the other, on the same generator weights: the LCM run samples with
the LCM scheduler at guidance 1.0 (the lcm_lora settings; a fused LoRA is merged into the UNet weights, so it costs
exactly what the base UNet costs), the DDIM run with 20 DDIM steps at the generator's guidance (3.0: a batched
CFG UNet call per step, as DiG-IN samples). Each step of the loop: a new z_T, encode the prompt through the frozen
text encoder, sample with grad (per-step checkpointing), decode, class cross-entropy (Eq. 3), backward to the prompt
rows, AdamW. Step time = (run(n) − run(0)) / n, median over repeats; the ratio is printed from this one run.

    python scripts/bench_prompt.py                                   # tiny on CPU (+ sd15_random on GPU if present)
    python scripts/bench_prompt.py --generator sd15_random --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

TARGET_RATIO = 4.0


def bench(generator: str, device: str, steps: int, repeats: int, ddim_steps: int, lcm_steps: int) -> dict:
    import torch

    from digin_cli.classifiers.timm_zoo import TimmClassifier
    from digin_cli.classifiers.tiny import TinyClassifier
    from digin_cli.generation.lcm import LCMSampler
    from digin_cli.api.builders import preset  # composed as the CLI does (schema, fragments)
    from digin_cli.generation.models import load_generator
    from digin_cli.generation.prompts import SoftPrompt
    from digin_cli.generation.sampler import DDIMSampler
    from digin_cli.objectives import ClassCrossEntropy
    from digin_cli.optimize import DiginOptimizer, OptimSettings, PromptVariables

    dev = torch.device(device)
    cfg = preset("generator", generator)
    sd = load_generator(cfg, dev)
    classifier = (TinyClassifier(seed=1) if generator == "tiny"
                  else TimmClassifier("resnet50", pretrained=False)).to(dev)  # random weights: no download
    objective = ClassCrossEntropy(classifier, 309)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run(sampler, n: int) -> float:
        settings = OptimSettings(steps=n, lr=0.01, loss_steps=1, fresh_latent=True, select="last",
                                 optimize_latent=False, optimize_uncond=False, optimizer=torch.optim.AdamW)
        prompt = SoftPrompt(sd.text_encoder, sd.tokenizer, "a picture of", 1)
        variables = PromptVariables(prompt, sampler, 0, settings, sd.null_embedding())
        sync()
        t0 = time.perf_counter()
        DiginOptimizer(sampler, settings).optimize(variables, objective)
        sync()
        return time.perf_counter() - t0

    results = {}
    for name, cls, num_steps, guidance in (("lcm", LCMSampler, lcm_steps, 1.0),
                                           ("ddim", DDIMSampler, ddim_steps, float(cfg.guidance_scale))):
        sd.num_steps, sd.guidance_scale = num_steps, guidance
        sampler = cls(sd, checkpointing=True)
        run(sampler, 1)  # warm-up (kernels, allocator, lazy init)
        per_step = statistics.median((run(sampler, steps) - run(sampler, 0)) / steps for _ in range(repeats))
        results[name] = {"T": num_steps, "guidance": guidance, "s_per_step": per_step}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=None, help="tiny (CPU default) | sd15_random (GPU default)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=3, help="optimisation steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--lcm-steps", type=int, default=4)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    plan = [(args.generator or "tiny", args.device or "cpu")]
    if args.generator is None and args.device is None and cuda:
        plan.append(("sd15_random", "cuda"))
    for generator, device in plan:
        r = bench(generator, device, args.steps, args.repeats, args.ddim_steps, args.lcm_steps)
        lcm, ddim = r["lcm"], r["ddim"]
        ratio = ddim["s_per_step"] / lcm["s_per_step"]
        print(f"{generator} on {device}: seconds per soft-prompt step")
        print(f"  LCM  T={lcm['T']:<3} guidance {lcm['guidance']:.1f}: {lcm['s_per_step']:.3f} s")
        print(f"  DDIM T={ddim['T']:<3} guidance {ddim['guidance']:.1f}: {ddim['s_per_step']:.3f} s")
        print(f"  DDIM / LCM = {ratio:.2f}x  (target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
