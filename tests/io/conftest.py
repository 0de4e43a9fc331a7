"""Fixtures for the output-layer tests: an isolated offline W&B environment and a reader for its run files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, silent W&B whose every file (runs, config, cache) lands under tmp_path."""
    root = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(root))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return root


def _records(path: Path) -> Iterator[object]:
    # A .wandb file is a 7-byte header (":W&B", magic, version) followed by LevelDB-log framed protobuf Records:
    # 32 KiB blocks, each chunk prefixed by crc32 (4), little-endian length (2) and type (1 full, 2 first, 3 middle,
    # 4 last). wandb 0.31 ships no Python reader for it, so the test decodes it directly.
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"not a W&B run file: {path}"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@pytest.fixture
def wandb_history() -> Callable[[Path], tuple[list[dict], dict]]:
    """Return (history rows, summary updates) recorded in one offline run directory."""

    def read(run_dir: Path) -> tuple[list[dict], dict]:
        (path,) = run_dir.glob("*.wandb")
        rows, summary = [], {}
        for record in _records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({(i.key or i.nested_key[0]): json.loads(i.value_json) for i in record.history.item
                             if len(i.nested_key) <= 1})
            elif kind == "summary":
                summary.update({(u.key or u.nested_key[0]): json.loads(u.value_json) for u in record.summary.update
                                if len(u.nested_key) <= 1})
        return rows, summary

    return read
