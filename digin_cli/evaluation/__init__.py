"""Evaluation of counterfactuals with the metrics the literature reports (``digin evaluate``).

``metrics`` (the numbers, on tensors) <- ``backbones`` (feature extractors, offline first) <- ``items`` (what a run
folder holds) <- ``evaluate`` (per item, per group; evaluation.json / .csv) <- ``cli`` (argparse, report, tables);
``published`` holds ACE's ImageNet protocol and the peers' numbers as reported.
"""
