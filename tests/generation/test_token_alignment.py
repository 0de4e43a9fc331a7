"""Token positions of a phrase and the word-level source -> target token alignment of prompt-to-prompt."""

import pytest
import torch

from digin_cli.generation.token_alignment import token_alignment, word_token_indices


def _planted_embed(tokenizer, near: dict[str, str]):
    """A stand-in text encoder: each token id gets a fixed random vector; each word of ``near`` (key) is given a
    vector close to that of its value word, so the word matching has a known answer."""
    table = torch.randn(tokenizer.vocab_size, 16, generator=torch.Generator().manual_seed(0))
    for word, like in near.items():
        (w,) = tokenizer(word, add_special_tokens=False).input_ids
        (other,) = tokenizer(like, add_special_tokens=False).input_ids
        table[w] = table[other] + 0.01 * table[w]

    def embed(prompt):
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        return table[torch.tensor(ids)][None]

    return embed


def test_token_alignment_word_replacement(tokenizer):
    tok = tokenizer
    source, target = "an image of a red fox", "an image of a cat"
    assert word_token_indices(tok, source, "red fox") == [5, 6]
    assert word_token_indices(tok, target, ["cat"]) == [5]
    assert word_token_indices(tok, "an image of a Red fox, sitting", "red fox") == [5, 6]  # case, punctuation
    # 'cat' is planted next to 'fox': it takes over the object word's attention only, not the modifier's.
    embed = _planted_embed(tok, {"cat": "fox"})
    mapping = token_alignment(tok, source, target, "red fox", "cat", embed=embed)
    assert mapping.shape == (77, 77)
    for j in range(5):  # <start>, an, image, of, a
        assert mapping[j, j] == 1 and mapping[:, j].sum() == 1
    assert torch.equal(mapping[:, 5], torch.eye(77)[:, 6])  # 'cat' <- 'fox'
    for j in range(6, 76):  # <end> and padding: shifted by one
        assert mapping[j + 1, j] == 1 and mapping[:, j].sum() == 1
    assert mapping[76, 76] == 1  # the last source column is repeated
    # The authors' softmax(+distance) would have weighted 'red' (the farther word) most; nearest is 'fox' alone.
    near_red = token_alignment(tok, source, target, "red fox", "cat", embed=_planted_embed(tok, {"cat": "red"}))
    assert torch.equal(near_red[:, 5], torch.eye(77)[:, 5])
    # Applied to maps: target = source @ M.
    maps = torch.rand(3, 77)
    remapped = maps @ mapping
    assert torch.equal(remapped[:, 5], maps[:, 6])
    assert torch.equal(remapped[:, 10], maps[:, 11])
    # The other direction: one source word for two target words (split 1/2 each, as prompt-to-prompt), later tokens
    # shifted back; no choice, no embed.
    back = token_alignment(tok, target, source, "cat", "red fox")
    assert back[5, 5] == back[5, 6] == 0.5 and back[6, 7] == 1 and back[75, 76] == 1
    with pytest.raises(ValueError, match="embed="):  # differing words with a choice need the text embeddings
        token_alignment(tok, source, target, "red fox", "cat")


def test_token_alignment_identical_multi_token_words_map_to_themselves(tokenizer):
    tok = tokenizer
    prompt = "a photograph of a fiddler crab"
    assert word_token_indices(tok, prompt, "fiddler crab") == [5, 6, 7]  # 'fiddler' is two BPE tokens
    assert torch.equal(token_alignment(tok, prompt, prompt, "fiddler crab", "fiddler crab"), torch.eye(77))
    # 'crab' stays 'crab' token for token; 'hermit' (one token) takes both 'fiddler' columns: their mass, summed.
    hermit = token_alignment(tok, prompt, "a photograph of a hermit crab", "fiddler crab", "hermit crab")
    both = torch.zeros(77)
    both[5] = both[6] = 1.0
    assert torch.equal(hermit[:, 5], both)
    assert torch.equal(hermit[:, 6], torch.eye(77)[:, 7])
    assert torch.equal(hermit[:, 7], torch.eye(77)[:, 8])  # <end>: shifted by the one token fewer


def test_token_alignment_planted_two_word_swap(tokenizer):
    tok = tokenizer
    source = "a photograph of a grey fox"
    # Identical words map one to one, the rest by distance: fox -> fox, grey -> red (whatever the embeddings).
    swap = token_alignment(tok, source, "a photograph of a red fox", "grey fox", "red fox",
                           embed=_planted_embed(tok, {"red": "fox"}))
    assert torch.equal(swap, torch.eye(77))  # 'red' <- 'grey' column 5, 'fox' <- 'fox' column 6
    # Equal counts, no identical word: the permutation of least distance, here against the word order.
    embed = _planted_embed(tok, {"vixen": "fox", "red": "grey"})
    crossed = token_alignment(tok, source, "a photograph of a vixen red", "grey fox", "vixen red", embed=embed)
    assert torch.equal(crossed[:, 5], torch.eye(77)[:, 6])  # vixen <- fox
    assert torch.equal(crossed[:, 6], torch.eye(77)[:, 5])  # red <- grey
    assert torch.equal(crossed[:, 7:], torch.eye(77)[:, 7:])
    straight = token_alignment(tok, source, "a photograph of a vixen red", "grey fox", "vixen red",
                               embed=_planted_embed(tok, {"vixen": "grey", "red": "fox"}))
    assert torch.equal(straight, torch.eye(77))


def test_token_alignment_rejects_bad_words(tokenizer):
    tok = tokenizer
    with pytest.raises(ValueError, match="not found"):
        token_alignment(tok, "an image of a red fox", "an image of a cat", "dog", "cat")
    with pytest.raises(ValueError, match="not found"):
        token_alignment(tok, "an image of a red fox", "an image of a cat", "fo", "cat")  # no partial words
    with pytest.raises(ValueError, match="not found"):
        token_alignment(tok, "an image of a red fox", "an image of a cat", "red fox", "dog")
    with pytest.raises(ValueError, match="differ only"):
        token_alignment(tok, "an image of a red fox", "a photo of a cat", "red fox", "cat")


def test_multi_token_target_word_keeps_the_attention_mass(tokenizer):
    """newt (1 CLIP token) -> axolotl (4 tokens): prompt-to-prompt's replacement mapper splits the source column over
    the 4 target tokens with weight 1/4, so the injected maps hold the word's mass once, not 4 times."""
    tok = tokenizer
    assert len(tok("axolotl", add_special_tokens=False).input_ids) == 4
    source, target = "an image of a newt on a rock", "an image of a axolotl on a rock"
    mapping = token_alignment(tok, source, target, "newt", "axolotl")
    newt = word_token_indices(tok, source, "newt")
    axolotl = word_token_indices(tok, target, "axolotl")
    assert newt == [5] and axolotl == [5, 6, 7, 8]
    assert torch.allclose(mapping[5, axolotl], torch.full((4,), 0.25))
    # Through the controller, as injected into the UNet: stored softmax maps, remapped to the target's tokens.
    from digin_cli.generation.attention import AttentionController

    controller = AttentionController(num_steps=2, mode="store")
    probs = torch.softmax(torch.randn(1, 2, 16, 77, generator=torch.Generator().manual_seed(0)), -1)
    controller.cross_attention_kwargs(0)["digin_store"]["down.attn2"] = probs.reshape(1, 2, 4, 4, 77)
    controller.mode, controller.token_map = "inject", mapping
    injected = controller.cross_attention_kwargs(0)["digin_inject"]["down.attn2"]
    source_mass = probs[..., newt].sum()
    assert torch.allclose(injected[..., axolotl].sum(), source_mass, rtol=1e-5)  # old rule: 4x
    assert torch.allclose(injected[..., 9:], probs[..., 6:74])  # the rest shifted by 3; the last 3 padding columns
    kept = 1 - probs[..., 74:].sum(-1)  # fall off the window, all other mass stays in each row
    assert torch.allclose(injected.sum(-1), kept, atol=1e-5)


def test_every_occurrence_of_the_class_word_is_mapped(tokenizer):
    """A caption naming the class twice: both occurrences are swapped and each keeps its own source columns."""
    tok = tokenizer
    source = "an image of a goldfinch next to another goldfinch"
    target = "an image of a robin next to another robin"
    mapping = token_alignment(tok, source, target, "goldfinch", "robin")
    first, second = 5, 10  # goldfinch: 2 tokens at 5-6 and 10-11; robin: 1 token at 5 and 9
    assert tok(target).input_ids[9] == tok("robin", add_special_tokens=False).input_ids[0]
    assert torch.equal(mapping[:, 5], torch.eye(77)[:, first] + torch.eye(77)[:, first + 1])
    assert torch.equal(mapping[:, 9], torch.eye(77)[:, second] + torch.eye(77)[:, second + 1])
    for j, i in ((6, 7), (7, 8), (8, 9), (10, 12)):  # next to another | <end>: shifted by one, then two
        assert torch.equal(mapping[:, j], torch.eye(77)[:, i])
    assert torch.allclose(mapping[:76].sum(1)[:75], torch.ones(75))  # every source row's mass goes somewhere
    with pytest.raises(ValueError, match="every occurrence"):  # only the first replaced: not a valid swap
        token_alignment(tok, source, "an image of a robin next to another goldfinch", "goldfinch", "robin")
