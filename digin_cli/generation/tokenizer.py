"""A real CLIP tokenizer built offline.

Stable Diffusion 1.x uses OpenAI's CLIP BPE tokenizer. Its ``vocab.json`` / ``merges.txt`` are derived
deterministically from the BPE merge list that the open_clip wheel ships (``bpe_simple_vocab_16e6.txt.gz``), so the
tiny and random-weight generators can tokenize real prompts exactly like SD 1.5 without touching the model hub.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from digin_cli.io.atomic import atomic_write_text

# CLIP keeps the first 48894 merges (49152 - 256 - 2 + 1 lines after the header) so that the vocabulary is
# 256 bytes + 256 end-of-word bytes + 48894 merges + 2 specials = 49408 entries.
_NUM_MERGES = 49152 - 256 - 2
_SOT, _EOT = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary and merge list, from the BPE file inside the open_clip wheel."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges] + [_SOT, _EOT]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tokenizer_files(cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` once into a cache folder and return the folder."""
    import open_clip

    root = Path(cache_dir or os.environ.get("DIGIN_CACHE", Path.home() / ".cache" / "digin"))
    folder = root / f"clip-tokenizer-openclip-{open_clip.__version__}"
    if not (folder / "merges.txt").exists():
        vocab, merges = clip_vocab_and_merges()
        atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
        # merges.txt is written last: its presence marks a complete folder.
        atomic_write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


@lru_cache(maxsize=None)
def clip_tokenizer(cache_dir: str | None = None) -> CLIPTokenizer:
    """SD 1.x's tokenizer (max length 77, pad = end-of-text), built without the hub."""
    folder = tokenizer_files(cache_dir)
    # from_pretrained on the folder, not the constructor: transformers 5 ignores ``vocab_file=`` / ``merges_file=``
    # keyword arguments and would silently build a two-token vocabulary.
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), pad_token=_EOT, model_max_length=77)
    if tokenizer("a red fox").input_ids[:5] != [49406, 320, 736, 3240, 49407]:
        raise RuntimeError(f"the CLIP tokenizer built from {folder} does not reproduce CLIP's token ids")
    return tokenizer
