"""Seconds per (class, feature) item of task=spurious, split into optimisation, sampling and segmentation.

Runs the real task through the CLI (one job, several features of one class) and reads the per-item stage timings
the task records in summary.csv (perf_counter around Eq. 5's prompt optimisation, the sampling of the images from
fresh z, and GroundingDINO + SAM on them). Default: tiny random models on CPU (tiny LCM generator, tiny classifier,
tiny GroundingDINO + HQ-SAM), the paper's 10 samples per feature. The first item also pays one-off warm-up, so the
median over items is reported beside the mean.

    python scripts/bench_spurious.py                                     # tiny, CPU
    python scripts/bench_spurious.py --generator lcm_lora --segmentation grounded_sam --classifier robust_resnet50 \
        --device cuda -- classifier.checkpoint=/weights/robust_r50.pt    # real models
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = ("optimise", "sample", "segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="tiny_lcm")
    parser.add_argument("--classifier", default="tiny_a")
    parser.add_argument("--segmentation", default="tiny_grounded_sam")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--features", type=int, default=3, help="items: features 0..N-1 of one class")
    parser.add_argument("--opt-steps", type=int, default=20, help="optimizer.steps (optimizer=prompt: 200)")
    parser.add_argument("--samples", type=int, default=10, help="task.num_samples (the paper: 10)")
    parser.add_argument("--threads", type=int, default=1, help="2 oversubscribes a loaded 2-core machine badly")
    parser.add_argument("overrides", nargs="*", help="extra digin overrides, after --")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="bench-spurious-") as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "digin_cli.cli", "task=spurious", f"generator={args.generator}",
                   f"classifier={args.classifier}", f"segmentation={args.segmentation}", f"device={args.device}",
                   "task.classes=[tench]", f"task.features=[{','.join(map(str, range(args.features)))}]",
                   f"task.num_samples={args.samples}", f"hydra.run.dir={run_dir}", f"paths.output_root={tmp}",
                   *([f"optimizer.steps={args.opt_steps}"] if args.opt_steps is not None else []), *args.overrides]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"bench_spurious: the run failed:\n{proc.stderr[-3000:]}")
        rows = [r for r in csv.DictReader((run_dir / "summary.csv").open()) if r["status"] == "ok"]
        steps = _config_value(run_dir / "config.yaml", "optimizer", "steps")

    seconds = {s: [float(r[f"seconds_{s}"]) for r in rows] for s in STAGES}
    totals = [sum(seconds[s][i] for s in STAGES) for i in range(len(rows))]
    table = Table(title=f"task=spurious, seconds per (class, feature) item: {args.generator} / {args.classifier} / "
                        f"{args.segmentation} on {args.device}, {steps} optimisation steps, {args.samples} samples, "
                        f"{len(rows)} items, {args.threads} threads")
    for column in ("stage", "mean s", "median s", "share of item"):
        table.add_column(column)
    for stage in STAGES:
        table.add_row(stage, f"{statistics.mean(seconds[stage]):.3f}", f"{statistics.median(seconds[stage]):.3f}",
                      f"{statistics.mean(seconds[stage]) / statistics.mean(totals):.1%}")
    table.add_row("item", f"{statistics.mean(totals):.3f}", f"{statistics.median(totals):.3f}", "100%")
    Console(width=120).print(table)


def _config_value(path: Path, *keys: str):
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    for key in keys:
        node = node[key]
    return node


if __name__ == "__main__":
    main()
