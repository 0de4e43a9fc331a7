"""Soft and hard prompts: the spliced encoding equals the pipeline's encode_prompt; gradients reach the variables."""

import pytest
import torch

from digin_cli.errors import DiginError
from digin_cli.generation.prompts import HardPrompt, SoftPrompt


def _prompt(sd, cls=SoftPrompt, **kwargs):
    return cls(sd.text_encoder, sd.tokenizer, **kwargs)


def test_no_learnable_tokens_equals_encode_prompt(tiny_sd):
    text = "a texture of a bee"
    ours = _prompt(tiny_sd, prefix=text, num_tokens=0)()
    assert torch.allclose(ours, tiny_sd.encode_prompt(text), atol=1e-6, rtol=0)


def test_spliced_word_embedding_equals_encoding_the_word(tiny_sd):
    # A learnable token initialised at "bee"'s embedding is the text "a photograph of a bee": the splice goes through
    # the model's own positions, mask and final norm.
    soft = _prompt(tiny_sd, prefix="a photograph of a", num_tokens=1, init="bee")
    reference = tiny_sd.encode_prompt("a photograph of a bee")
    assert torch.allclose(soft(), reference, atol=1e-6, rtol=0)
    assert not torch.allclose(_prompt(tiny_sd, prefix="a photograph of a", init="fox")(), reference, atol=1e-3)
    assert soft.nearest_tokens(3)[0][0] == "bee"


def test_gradient_reaches_the_rows_only(tiny_sd):
    soft = _prompt(tiny_sd, prefix="a shape of", num_tokens=2, seed=1)
    assert [n for n, _ in soft.named_parameters()] == ["embeddings"]
    soft().pow(2).sum().backward()
    assert soft.embeddings.grad.abs().sum(-1).gt(0).all()
    assert all(p.grad is None for p in tiny_sd.text_encoder.parameters())
    # Random init sits at the embedding matrix's scale and depends on the seed.
    matrix = tiny_sd.text_encoder.get_input_embeddings().weight
    assert 0.5 < soft.embeddings.std().item() / matrix.std().item() < 2
    assert not torch.equal(soft.embeddings, _prompt(tiny_sd, prefix="a shape of", num_tokens=2, seed=2).embeddings)


def test_hard_prompt_draws_valid_tokens_and_passes_gradient_to_logits(tiny_sd):
    torch.manual_seed(0)
    hard = _prompt(tiny_sd, HardPrompt, prefix="a picture of", num_tokens=2, tau=1.0)
    one_hot = hard.one_hot(sample=True)
    assert torch.equal(one_hot.sum(-1), torch.ones(2)) and set(one_hot.unique().tolist()) == {0.0, 1.0}
    ids = one_hot.argmax(-1).tolist()
    assert not set(ids) & set(tiny_sd.tokenizer.all_special_ids)
    (hard().pow(2).sum()).backward()
    assert hard.logits.grad.abs().sum(-1).gt(0).all()  # straight-through: the softmax gradient reaches every row
    text = hard.text()
    assert text.startswith("a picture of") and len(text) > len("a picture of")
    # The argmax prompt encodes like the decoded text (whole-word tokens re-tokenize to themselves).
    words = _prompt(tiny_sd, HardPrompt, prefix="a picture of", init="flower", whole_words=True)
    assert words.text() == "a picture of flower"
    assert torch.allclose(words(sample=False), tiny_sd.encode_prompt(words.text()), atol=1e-6, rtol=0)
    tokens = tiny_sd.tokenizer.convert_ids_to_tokens(words.one_hot().argmax(-1).tolist())
    assert all(t.endswith("</w>") for t in tokens)


@pytest.mark.parametrize("kwargs,needle", [
    ({"prefix": " "}, "tokenizes to nothing"),
    ({"init": "  "}, "tokenizes to nothing"),
    ({"prefix": "word " * 70, "num_tokens": 6}, "exceed"),
])
def test_bad_prompt_settings_are_user_errors(tiny_sd, kwargs, needle):
    with pytest.raises(DiginError, match=needle):
        _prompt(tiny_sd, **kwargs)
    with pytest.raises(DiginError, match=needle):
        _prompt(tiny_sd, HardPrompt, **kwargs)
