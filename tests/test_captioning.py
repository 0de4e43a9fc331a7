"""Captions for visual counterfactuals: template captioner, a tiny real transformers captioner loaded from disk,
the prefix forcing, the CLIP-token budget and the on-disk caption cache."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from digin_cli.captioning import (
    HFCaptioner,
    TemplateCaptioner,
    build_captioner,
    fit_clip_tokens,
    force_prefix,
    image_hash,
    join_continuation,
    model_slug,
)
from digin_cli.errors import DiginError
from digin_cli.api.builders import preset
from digin_cli.generation.tokenizer import clip_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf" / "captioner"
PREFIX = "an image of a red fox"


def _image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 40, 48, generator=g)


def _hf_cfg(model, **over):
    cfg = preset("captioner", "hf")
    cfg.model = str(model)
    return OmegaConf.merge(cfg, over)


# ------------------------------------------------------------------------------------------------ template / builder
def test_template_captioner_fills_the_template():
    cap = TemplateCaptioner()
    assert cap.caption(_image(0), "red fox") == PREFIX
    assert cap.caption(_image(0), "  German   shepherd dog ") == "an image of a German shepherd dog"
    assert TemplateCaptioner("a {} in the wild").caption(_image(0), "tiger") == "a tiger in the wild"
    with pytest.raises(DiginError, match="exactly once"):
        TemplateCaptioner("an image")


def test_build_captioner_none_and_defaults():
    cap = build_captioner(preset("captioner", "none"), cache_dir=None, device="cpu")
    assert isinstance(cap, TemplateCaptioner) and cap.caption(_image(0), "red fox") == PREFIX
    assert isinstance(build_captioner(None), TemplateCaptioner)
    custom = build_captioner(OmegaConf.create({"name": "none", "template": "a photo of a {}"}))
    assert custom.caption(_image(0), "tiger") == "a photo of a tiger"
    # hf.yaml's fields are exactly HFCaptioner's arguments
    assert preset("captioner", "hf").model == "Salesforce/blip-image-captioning-large"


# -------------------------------------------------------------------------------------------------- prefix forcing
@pytest.mark.parametrize("text, expected", [
    ("", PREFIX),
    ("an image of a red fox sitting in the snow", "an image of a red fox sitting in the snow"),
    ("  AN IMAGE OF A Red Fox   sitting\n in  the snow ", "an image of a red fox sitting in the snow"),
    ("an image of a red fox, in the snow", "an image of a red fox, in the snow"),
    ("a dog on grass", "an image of a red fox, a dog on grass"),
    ("an image of a dog on grass", "an image of a red fox, a dog on grass"),
    ("a photo of a red fox in the snow", "an image of a red fox in the snow"),
    ("there is a red fox sitting on a log", "an image of a red fox sitting on a log"),
    ("red fox on a rock", "an image of a red fox on a rock"),
    ("a close-up photo of two cats", "an image of a red fox, two cats"),
    ("an image of a red foxes den", "an image of a red fox, a red foxes den"),  # 'foxes' is not the word 'fox'
])
def test_force_prefix(text, expected):
    assert force_prefix(text, "an image of a {}", "red fox") == expected


def test_force_prefix_other_templates():
    assert force_prefix("a photo of a tiger", "a photo of a {}", "tiger") == "a photo of a tiger"
    assert force_prefix("a photo of a cat", "a photo of a {}", "tiger") == "a photo of a tiger, a cat"
    assert force_prefix("grass", "{} in the wild", "tiger") == "tiger in the wild, grass"


def test_join_continuation():
    assert join_continuation(PREFIX, " sitting in the snow") == "an image of a red fox sitting in the snow"
    assert join_continuation(PREFIX, ", in the snow") == "an image of a red fox, in the snow"
    assert join_continuation(PREFIX, "") == PREFIX
    # The model extended the last prompt word ('fox' -> 'foxes'): the fragment goes, the class words stay.
    assert join_continuation(PREFIX, "es on snow") == "an image of a red fox on snow"


def test_fit_clip_tokens_cuts_at_a_word_boundary_and_keeps_the_prefix():
    tok = clip_tokenizer()
    words = " ".join(f"word{i}" for i in range(80))
    long = f"{PREFIX} sitting next to {words}"
    cut = fit_clip_tokens(long, PREFIX, max_tokens=60)
    assert cut.startswith(PREFIX + " ")
    assert long.startswith(cut) and long[len(cut)] == " "  # cut between words
    assert len(tok(cut)["input_ids"]) <= 62  # 60 + start/end
    assert fit_clip_tokens("a short caption", "", 60) == "a short caption"
    # even a budget smaller than the prefix never cuts into it
    assert fit_clip_tokens(long, PREFIX, max_tokens=2) == PREFIX


def test_image_hash_and_slug(tmp_path):
    a, b = _image(0), _image(1)
    assert image_hash(a) == image_hash(a.clone()) and image_hash(a) != image_hash(b)
    assert image_hash(a) != image_hash(a.reshape(1, 3, 48, 40))  # same bytes, other shape
    assert model_slug("Salesforce/blip-image-captioning-large") == "Salesforce--blip-image-captioning-large"
    (tmp_path / "x" / "m").mkdir(parents=True)
    (tmp_path / "y" / "m").mkdir(parents=True)
    sx, sy = model_slug(str(tmp_path / "x" / "m")), model_slug(str(tmp_path / "y" / "m"))
    assert sx.startswith("m-") and sx != sy


# ------------------------------------------------------------------------------------------------ tiny HF captioner
def test_tiny_hf_captioner_end_to_end(tiny_captioner_dir, tmp_path):
    cap = build_captioner(_hf_cfg(tiny_captioner_dir, max_new_tokens=12, num_beams=2), cache_dir=tmp_path,
                          device="cpu")
    assert isinstance(cap, HFCaptioner) and cap.model_type == "vision-encoder-decoder"

    seen = {}
    cap._load()
    generate = cap._model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    cap._model.generate = spy
    text = cap.caption(_image(0), "red fox")
    assert text.startswith(PREFIX) and text == " ".join(text.split())
    assert len(clip_tokenizer()(text)["input_ids"]) <= 77
    # conditioned: the decoder starts from its start token followed by the filled template
    tok = clip_tokenizer()
    assert seen["decoder_input_ids"][0].tolist() == [tok.bos_token_id] + tok(PREFIX, add_special_tokens=False)[
        "input_ids"]
    assert seen["num_beams"] == 2 and seen["max_new_tokens"] == 12 and seen["do_sample"] is False
    # deterministic, and independent of the cache
    assert cap.generate(_image(0), "red fox") == text
    # a ViT image processor cannot pair with a CLIP tokenizer in a ProcessorMixin: loaded separately
    from transformers import ViTImageProcessor

    assert cap._processor is None and isinstance(cap._image_processor, ViTImageProcessor)


def test_captions_are_cached_on_disk(tiny_captioner_dir, tmp_path, monkeypatch):
    cap = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=8, num_beams=1, cache_dir=tmp_path)
    img0, img1 = _image(0), _image(1)
    first = cap.caption(img0, "red fox", key="k0")
    assert cap.generate_calls == 1

    def boom(*a, **k):
        raise AssertionError("generate called for a cached caption")

    monkeypatch.setattr(cap._model, "generate", boom)
    assert cap.caption(img0, "red fox", key="k0") == first
    monkeypatch.undo()

    second = cap.caption(img1, "tiger")  # key=None: the tensor's content hash
    assert cap.generate_calls == 2 and second.startswith("an image of a tiger")
    assert cap.caption(img1.clone(), "tiger") == second and cap.generate_calls == 2
    cap.caption(img0, "tiger", key="k0")  # same image, other class: a new entry
    assert cap.generate_calls == 3

    path = tmp_path / "captions" / f"{model_slug(str(tiny_captioner_dir))}.json"
    assert path == cap.cache_path
    data = json.loads(path.read_text())
    assert len(data) == 3 and first in data.values() and second in data.values()
    assert any(k.startswith("k0|red fox|") for k in data)
    assert any(k.startswith(image_hash(img1) + "|tiger|") for k in data)

    # A new instance (another run / sweep job) reads the cache and never loads the model.
    again = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=8, num_beams=1, cache_dir=tmp_path)
    monkeypatch.setattr(HFCaptioner, "_load", boom)
    assert again.caption(img0, "red fox", key="k0") == first
    assert again.caption(img1, "tiger") == second
    assert again._model is None and again.generate_calls == 0
    # other generation settings -> other cache entries (not served stale)
    other = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=9, num_beams=1, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="cached caption"):
        other.caption(img0, "red fox", key="k0")


def test_cache_merges_entries_written_by_another_job(tiny_captioner_dir, tmp_path):
    a = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=4, num_beams=1, cache_dir=tmp_path)
    b = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=4, num_beams=1, cache_dir=tmp_path)
    ca = a.caption(_image(0), "red fox")
    a.unload()
    assert b.caption(_image(0), "red fox") == ca and b.generate_calls == 0  # b read what a wrote
    b.caption(_image(2), "tiger")
    a.caption(_image(3), "tiger")  # a's write must keep b's entry
    assert len(json.loads(a.cache_path.read_text())) == 3


def test_long_generations_fit_the_clip_budget(tiny_captioner_dir, tmp_path):
    cap = HFCaptioner(model=str(tiny_captioner_dir), max_new_tokens=70, num_beams=1, max_tokens=30,
                      cache_dir=tmp_path)
    text = cap.caption(_image(4), "red fox")
    assert text.startswith(PREFIX) and len(clip_tokenizer()(text)["input_ids"]) <= 32


def test_tiny_blip_is_prompted_through_its_processor(tmp_path):
    """A real BlipProcessor (ProcessorMixin) path: the prompt goes in as text and BLIP continues it."""
    from transformers import (
        AutoProcessor,
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = "an image of a red fox tiger sitting in the snow on grass dog cat with".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + words + [",", "."]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = BlipConfig(vision_config=dict(small, image_size=32, patch_size=8), projection_dim=32,
                     text_config=dict(small, vocab_size=len(vocab), encoder_hidden_size=32, bos_token_id=5,
                                      sep_token_id=3, pad_token_id=0, eos_token_id=3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(cfg).eval()
    folder = tmp_path / "tiny-blip"
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok
                  ).save_pretrained(folder)
    assert isinstance(AutoProcessor.from_pretrained(folder), BlipProcessor)

    cap = HFCaptioner(model=str(folder), max_new_tokens=10, num_beams=2, cache_dir=tmp_path)
    seen = {}
    cap._load()
    generate = cap._model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    cap._model.generate = spy
    text = cap.caption(_image(0), "Red Fox")
    assert cap._processor is not None and cap.model_type == "blip"
    assert tok.decode(seen["input_ids"][0], skip_special_tokens=True) == "an image of a red fox"
    # a continuation, not a comma-joined standalone caption; the template keeps the class's own spelling
    assert text.startswith("an image of a Red Fox ") and not text.startswith("an image of a Red Fox,")
    assert cap.generate(_image(0), "Red Fox") == text


# ------------------------------------------------------------------------------------------------------- errors
def test_offline_missing_model_is_a_digin_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiginError) as err:
        HFCaptioner(model="digin-test/no-such-captioner", cache_dir=tmp_path)
    msg = str(err.value)
    assert "digin-test/no-such-captioner" in msg and "HF_HUB_OFFLINE" in msg and "captioner=none" in msg
    # through the config builder: Hydra's InstantiationException is unwrapped
    with pytest.raises(DiginError, match="captioner=none"):
        build_captioner(_hf_cfg("digin-test/no-such-captioner"), cache_dir=tmp_path, device="cpu")


def test_non_captioning_model_and_bad_settings(tmp_path):
    from transformers import ViTConfig

    ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=64).save_pretrained(tmp_path / "vit")
    with pytest.raises(DiginError, match="not an image-to-text model.*captioner=none"):
        HFCaptioner(model=str(tmp_path / "vit"), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiginError, match="folder.*captioner=none"):
        HFCaptioner(model=str(tmp_path / "empty"), cache_dir=tmp_path)
    with pytest.raises(DiginError, match="max_tokens"):
        HFCaptioner(model=str(tmp_path / "vit"), max_tokens=100)
    with pytest.raises(DiginError, match="exactly once"):
        HFCaptioner(model=str(tmp_path / "vit"), template="no slot")
