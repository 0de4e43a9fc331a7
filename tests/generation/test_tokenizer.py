"""The offline CLIP tokenizer gives Stable Diffusion's real token ids."""

from digin_cli.generation.tokenizer import clip_tokenizer, clip_vocab_and_merges


def test_vocabulary_is_clips():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["fox</w>"] == 3240


def test_known_prompts_tokenize_to_clip_ids():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a red fox").input_ids == [49406, 320, 736, 3240, 49407]
    ids = tok("a photograph of a koala", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407  # SD pads with end-of-text
    assert tok.decode(tok("an image of a steel arch bridge").input_ids, skip_special_tokens=True) == \
        "an image of a steel arch bridge"


def test_different_prompts_give_different_embeddings(tiny_sd):
    a, b = tiny_sd.encode_prompt("a photograph of a red fox"), tiny_sd.encode_prompt("a photograph of a tabby cat")
    assert (a - b).abs().max() > 1e-2
