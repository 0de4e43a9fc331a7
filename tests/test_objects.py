"""task.objects=auto's object lister: head nouns of a VLM's answers, ranked by how many images name them, answers
cached on disk; a model that is not image-to-text is refused in one line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from digin_cli.captioning.objects import ObjectLister, nouns
from digin_cli.errors import DiginError


@pytest.mark.parametrize("text,expected", [
    ("sand, water, a wooden boat", ["sand", "water", "boat"]),
    ("1. Dry grass\n2. A small bird\n3. fence posts", ["grass", "bird", "posts"]),
    ("a man riding a horse on the beach", ["man", "horse", "beach"]),
    ("The image shows a crab on sand and some shells.", ["crab", "sand", "shells"]),
    ("sand, sand, Sand", ["sand"]),
])
def test_nouns_are_the_head_nouns_of_the_listed_phrases(text, expected):
    assert nouns(text) == expected


@pytest.fixture
def config_only_model(tmp_path):
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig

    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), GPT2Config(add_cross_attention=True))
    cfg.save_pretrained(tmp_path / "vlm")
    return tmp_path / "vlm"


def test_objects_are_ranked_by_images_naming_them_and_answers_are_cached(config_only_model, tmp_path, monkeypatch):
    files = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    answers = {0: "a crab on sand", 1: "sand, water", 2: "water, sand and a rock"}
    lister = ObjectLister(str(config_only_model), cache_dir=tmp_path / "cache")
    assert not lister.chat  # an image-to-text model: captions, not a chat prompt

    def answer(image):
        lister.generate_calls += 1
        return answers[image.getpixel((0, 0))[0] // 40]

    monkeypatch.setattr(lister, "answer", answer)
    ranked = lister.objects(files, tmp_path)
    assert ranked == ["sand", "water", "crab", "rock"]  # 3 images name sand, 2 water; then first appearance
    listed = json.loads((tmp_path / "objects_listed.json").read_text())
    assert [i["nouns"] for i in listed["images"]] == [["crab", "sand"], ["sand", "water"], ["water", "sand", "rock"]]
    assert lister.generate_calls == 3
    again = ObjectLister(str(config_only_model), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(again, "answer", lambda image: pytest.fail("served from the cache"))
    assert again.objects(files) == ranked


def test_a_model_that_is_not_image_to_text_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(DiginError, match="'bert' model, not an image-text-to-text or image-to-text model"):
        ObjectLister(str(tmp_path / "bert"))
    with pytest.raises(DiginError, match="cannot load the object lister"):
        ObjectLister(str(tmp_path / "nope"))
