"""Fixtures shared by the generation tests."""

import pytest


@pytest.fixture(scope="module")
def tokenizer(tiny_sd):
    """The pipeline's CLIP tokenizer, checked to be the real BPE (the word alignment is meaningless otherwise)."""
    tok = tiny_sd.tokenizer
    ids = tok("a red fox").input_ids
    assert ids == [49406, 320, 736, 3240, 49407], (
        f"the SD tokenizer maps 'a red fox' to {ids}, not CLIP's [49406, 320, 736, 3240, 49407]: "
        "digin_cli/generation/tokenizer.py builds an empty vocabulary (transformers 5 ignores vocab_file/merges_file)")
    return tok
