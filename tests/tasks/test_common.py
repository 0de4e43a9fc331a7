"""run_items: per-item seeding, so an item's randomness does not depend on the items before it."""

import torch
from omegaconf import OmegaConf

from digin_cli.augment import Cutouts
from digin_cli.context import RunContext
from digin_cli.io.tracking import Tracker
from digin_cli.io.writer import Writer
from digin_cli.tasks.common import run_items


def _ctx(tmp_path, seed=0):
    return RunContext(OmegaConf.create({"seed": seed, "task": {}}), tmp_path, torch.device("cpu"), torch.float32,
                      Writer(tmp_path), Tracker("disabled"))


def _draws(ctx, names):
    """Run items ``names``; each draws cutouts through ctx.rng and a number from the global RNG."""
    cut = Cutouts(num=3, power=0.3, noise_sd=0.01, generator=ctx.rng)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    seen = {}

    def work(path, item):
        seen[item["name"]] = (cut(image, (8, 8)), torch.rand(4))
        return {}

    run_items(ctx, [(ctx.output_dir / n / "seed_0", {"name": n}) for n in names], work, "probe")
    return seen


def test_an_item_draws_the_same_numbers_alone_or_after_others(tmp_path):
    both = _draws(_ctx(tmp_path / "ab"), ["a", "b"])
    alone = _draws(_ctx(tmp_path / "b"), ["b"])
    assert torch.equal(both["b"][0], alone["b"][0]) and torch.equal(both["b"][1], alone["b"][1])
    assert not torch.equal(both["a"][0], both["b"][0])  # items get different streams
    again = _draws(_ctx(tmp_path / "again"), ["a", "b"])
    assert all(torch.equal(again[k][i], both[k][i]) for k in "ab" for i in (0, 1))
    other_seed = _draws(_ctx(tmp_path / "s1", seed=1), ["b"])
    assert not torch.equal(other_seed["b"][0], alone["b"][0])


def test_a_private_payload_reaches_work_and_stays_out_of_the_rows_and_the_shards(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.cfg.task = {"num_shards": 2, "shard_index": 1}
    payloads = [object() for _ in range(4)]
    got = []

    def work(path, item, payload):
        got.append((item["n"], payload))
        return {"ok": 1}

    rows = run_items(ctx, [(tmp_path / str(n), {"n": n}, p) for n, p in enumerate(payloads)], work, "probe")
    assert got == [(1, payloads[1]), (3, payloads[3])]  # sharded together with its item
    assert rows == [{"n": 1, "status": "ok", "ok": 1}, {"n": 3, "status": "ok", "ok": 1}]
