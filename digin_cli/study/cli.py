"""``digin study make|score``: argparse only; caught in :func:`digin_cli.cli.main` before Hydra sees it."""

from __future__ import annotations

import argparse
from pathlib import Path

from digin_cli.errors import DiginError

USAGE = ("digin study make <folder A> [<folder B>] [--config uvce] --out <study folder>  |  "
         "digin study score <study folder> <answers.json> ...")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digin study", description="Blinded user studies of one or two runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write a self-contained study folder (index.html + images)")
    make.add_argument("folders", nargs="+", type=Path, help="run or sweep folder A, and optionally B")
    make.add_argument("--config", default="uvce", help="questionnaire: a YAML file, or uvce | resemblance")
    make.add_argument("--out", type=Path, required=True, help="a new folder for the study")
    make.add_argument("--safety-checker", default=None,
                      help="hub id or local folder of diffusers' StableDiffusionSafetyChecker (always run)")
    make.add_argument("--seed", type=int, default=None, help="study seed (orders and sides); random if not given")
    make.add_argument("--device", default="cpu", help="device for the safety checker")
    score = commands.add_parser("score", help="score downloaded answers: results.csv and results.html")
    score.add_argument("study", type=Path, help="the study folder")
    score.add_argument("answers", nargs="+", type=Path, help="answers files downloaded from the study page")
    score.add_argument("--out", type=Path, default=None, help="where results go (default: the study folder)")
    score.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    def usage_error(message: str):
        raise DiginError(f"digin study: {message} — usage: {USAGE}")

    for p in (parser, make, score):
        p.error = usage_error
    return parser


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    if args.command == "make":
        from digin_cli.safety import DEFAULT_CHECKER, cached_checker
        from digin_cli.study.make import make_study

        if not 1 <= len(args.folders) <= 2:
            raise DiginError(f"digin study make takes one or two run folders, got {len(args.folders)} — usage: {USAGE}")
        checker = cached_checker(args.safety_checker or DEFAULT_CHECKER, args.device)
        out = make_study(args.folders, args.config, args.out, checker, checker.name, args.seed)
        print(out / "index.html")
    else:
        from digin_cli.study.score import score_study

        for path in score_study(args.study, args.answers, args.out, args.seed):
            print(path)
