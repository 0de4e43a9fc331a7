"""The safetensors cache shared by feature statistics and inversions: entries round-trip, other formats and broken
files are misses, and a key is computed once however many callers wait on it."""

import threading

import torch

from digin_cli.features import FeatureCache
from digin_cli.generation.inversion import InversionCache
from digin_cli.io.tensor_cache import TensorCache


class Old(TensorCache):
    format = "old-layout"


class New(TensorCache):
    format = "new-layout"


def test_entries_round_trip_and_another_format_is_a_miss(tmp_path):
    x = torch.arange(6.0).reshape(2, 3)
    New(tmp_path).write("k", {"x": x}, {"note": "hi"})
    tensors, meta = New(tmp_path).read("k")
    assert torch.equal(tensors["x"], x) and meta == {"note": "hi", "format": "new-layout"}
    assert Old(tmp_path).read("k") is None  # a layout change never serves the old entry
    assert New(tmp_path).read("missing") is None


def test_a_broken_entry_is_a_miss_that_the_next_write_replaces(tmp_path, caplog):
    cache = New(tmp_path)
    cache.path("k").write_bytes(b"not a safetensors file")
    assert cache.read("k") is None and "unreadable" in caplog.text
    cache.write("k", {"x": torch.ones(2)})
    assert torch.equal(cache.read("k")[0]["x"], torch.ones(2))


def test_once_computes_each_key_once_across_threads(tmp_path):
    cache, calls, results = New(tmp_path), [], [None] * 4
    started = threading.Barrier(4)

    def compute():
        calls.append(1)
        return torch.full((3,), 7.0)

    def lookup():
        entry = cache.read("k")
        return None if entry is None else entry[0]["x"]

    def worker(slot):
        started.wait()
        results[slot] = cache.once("k", lookup, compute, lambda x: cache.write("k", {"x": x}))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(torch.equal(r, torch.full((3,), 7.0)) for r in results)


def test_feature_and_inversion_caches_share_the_base_but_not_entries(tmp_path):
    assert issubclass(FeatureCache, TensorCache) and issubclass(InversionCache, TensorCache)
    assert FeatureCache.format != InversionCache.format
    FeatureCache(tmp_path).put("k", torch.ones(2, 4), [])
    assert InversionCache(tmp_path).get("k") is None  # same key, other cache: a miss, not a crash
    assert torch.equal(FeatureCache(tmp_path).get("k", 2), torch.ones(2, 4))
