"""``digin evaluate <run or sweep folder> [options]``: argparse flags (``--metrics fid,cout``); never reaches Hydra."""

from __future__ import annotations

import argparse
from pathlib import Path

from digin_cli.errors import DiginError
from digin_cli.evaluation import backbones as B
from digin_cli.evaluation.evaluate import METRICS, Backbones, evaluate, parse_metrics

PROTOCOLS = ("imagenet_pairs",)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digin evaluate", description="Counterfactual metrics (FID, KID, split-FID, "
                                "COUT, S³, LPIPS, closeness, flip rate, seconds and memory) of a vce / neuron_cf / "
                                "npca run or sweep: evaluation.json + evaluation.csv beside summary.csv, and a "
                                "section on report.html.")
    p.add_argument("folder", type=Path, help="outputs/<task>/runs/<run> or outputs/<task>/multiruns/<sweep>")
    p.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(METRICS)} (default: all; s3 only "
                   "with --simsiam)")
    p.add_argument("--by-pair", action="store_true", help="also one row per unordered (start, target) class pair")
    p.add_argument("--protocol", choices=PROTOCOLS, help="imagenet_pairs: ACE's three pairs, printed beside the "
                   "published FID (implies --by-pair)")
    p.add_argument("--inception", help="FID Inception weights (weights-inception-2015-12-05-6726825d.pth); default: "
                   "torch's cache")
    p.add_argument("--lpips-net", default="alex", help="LPIPS backbone: alex (default, the LPIPS paper's) | vgg")
    p.add_argument("--lpips-backbone", help="torchvision ImageNet weights of that backbone; default: torch's cache")
    p.add_argument("--simsiam", help="SimSiam ResNet-50 checkpoint (facebookresearch/simsiam) for S³")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the split-FID halves and KID subsets")
    return p


def real_backbones(args: argparse.Namespace, device) -> Backbones:
    def classifier(job: Path):
        from omegaconf import OmegaConf

        from digin_cli.classifiers import build_classifier

        config = job / "config.yaml"
        if not config.is_file():
            raise DiginError(f"COUT needs the run's classifier but {config} is missing — evaluate a folder written "
                             "by digin, or leave cout out of --metrics")
        return build_classifier(OmegaConf.load(config).classifier, device)

    return Backbones(inception=lambda: B.inception(args.inception, device),
                     lpips=lambda: B.lpips_model(args.lpips_net, args.lpips_backbone, device),
                     simsiam=lambda: B.simsiam_encoder(args.simsiam, device), classifier=classifier)


def main(argv: list[str], backbones: Backbones | None = None) -> dict:
    """Run ``digin evaluate``; ``backbones`` replaces the real models (tests)."""
    import torch

    from digin_cli.device import resolve_device
    from digin_cli.io.progress import print_table
    from digin_cli.io.report import rebuild
    from digin_cli.task_registry import key_images

    p = parser()

    def usage_error(message: str):
        raise DiginError(f"digin evaluate: {message} — usage: digin evaluate <run or sweep folder> [--metrics ...]")

    p.error = usage_error
    args = p.parse_args(argv)
    chosen = parse_metrics(args.metrics, bool(args.simsiam))
    if args.simsiam and not Path(args.simsiam).expanduser().is_file():  # before minutes of other metrics
        raise DiginError(f"SimSiam checkpoint not found: {args.simsiam} — pass --simsiam=<checkpoint file>")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    result = evaluate(args.folder, chosen, backbones or real_backbones(args, device), device,
                      by_pair=args.by_pair or args.protocol == "imagenet_pairs", seed=args.seed)
    rebuild(args.folder, key_images)  # report.html shows the new section
    print_table("evaluation", result["groups"])
    if args.protocol == "imagenet_pairs":
        from digin_cli.evaluation.published import SOURCE

        print_table("ImageNet pairs, ACE's protocol: digin beside the published FID", protocol_rows(result))
        print(f"published FID: {SOURCE}")
    print(Path(args.folder).expanduser() / "evaluation.csv")
    return result


def protocol_rows(result: dict) -> list[dict]:
    """One row per ACE pair: digin's numbers and the published FID beside them."""
    from digin_cli.classifiers.classnames import imagenet_class_names
    from digin_cli.evaluation.published import PAIRS, PUBLISHED_FID

    names = imagenet_class_names()
    groups = {g["group"]: g for g in result["groups"]}
    rows = []
    for n, (a, ia, b, ib) in enumerate(PAIRS):
        g = groups.get(" ↔ ".join(sorted((names[ia], names[ib]))), {})
        row = {"pair": f"{a} ↔ {b}", "n": g.get("n", 0)}
        for key, column in (("fid", "FID"), ("split_fid", "split-FID"), ("cout_mean", "COUT"), ("s3_mean", "S³"),
                            ("flip_rate", "flip rate"), ("seconds_mean", "s / CF")):
            row[column] = g.get(key)
        row.update({f"{method.split()[0]} FID": fids[n] for method, fids in PUBLISHED_FID.items()})
        rows.append(row)
    return rows
