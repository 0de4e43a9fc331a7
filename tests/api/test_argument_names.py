"""The API speaks in its own argument names: a bad keyword is named as the caller passed it (``mask_words=``,
``delta=``, ``lora=``), never as a command-line key (``task.mask_words=``), while the CLI keeps its own lines; and
the template caption of a counterfactual (the CLI's ``captioner=none`` ablation) is warned about, as on the CLI."""

from __future__ import annotations

import re
import warnings

import pytest
from PIL import Image, ImageDraw

import digin_cli as digin
from digin_cli.api.neurons import check_keep_words
from digin_cli.captioning import TemplateCaptioner
from digin_cli.errors import DiginError

CLI_KEY = re.compile(r"(?<![\w.])(task|generator|classifier|segmentation|optimizer|captioner)\.\w")


def api_line(call, *needles: str) -> str:
    """The one-line DiginError of ``call()``: it holds every needle and no command-line key."""
    with pytest.raises(DiginError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    assert not CLI_KEY.search(message), message
    for needle in needles:
        assert needle in message, message
    return message


def fox() -> Image.Image:
    image = Image.new("RGB", (80, 80), (40, 120, 200))
    ImageDraw.Draw(image).ellipse((20, 20, 60, 60), fill=(220, 90, 30))
    return image


@pytest.fixture(scope="module")
def segmenter():
    return digin.load_segmenter("tiny_sam")


def test_keep_words_not_in_the_prompt_names_the_keyword_and_the_cli_keeps_its_key(tiny, segmenter):
    gen, f, _ = tiny
    neurons = digin.NeuronVisualiser(gen, f, segmenter=segmenter)
    api_line(lambda: neurons.visualise(3, prompt="a photograph of sand", keep_words="crab"),
             "keep_words 'crab' does not occur in the prompt 'a photograph of sand'")
    # task=neuron runs the same check before each item, named as task.mask_words (its line of before)
    with pytest.raises(DiginError) as err:
        check_keep_words("a photograph of sand", "crab", "task.mask_words")
    assert str(err.value) == ("task.mask_words 'crab' does not occur in the prompt 'a photograph of sand' — pass "
                              "words of the prompt naming the object")


def test_mask_words_of_a_feature_edit_name_the_keyword(tiny_sd, segmenter):
    clf = digin.load_classifier("tiny_a")
    method = digin.NeuronCounterfactuals(tiny_sd, clf, segmenter)
    api_line(lambda: method.explain(fox(), neuron=3, mask_words="zebra"),
             "mask_words 'zebra' does not occur in the class name", "e.g. mask_words=", "leave mask_words unset")


def test_prompt_explanations_name_their_keywords(tiny):
    gen, f, _ = tiny
    explainer = digin.PromptExplainer(gen, f)
    api_line(lambda: explainer.explain(), "pass class_= and/or feature=")
    api_line(lambda: explainer.explain_text(class_=0, vocabulary=["flower", "photosynthesis"]),
             "vocabulary word 'photosynthesis' is")
    api_line(lambda: explainer.explain_text(class_=0, vocabulary=["flower"], tau=0),
             "temperature tau must be > 0", "e.g. tau=1.0")
    api_line(lambda: explainer.explain_text(class_=0, vocabulary=["flower"], tau_end=-1),
             "temperature tau_end must be > 0", "e.g. tau_end=1.0")
    api_line(lambda: explainer.explain_text(class_=0, vocabulary=["<|endoftext|>"]),  # a special token only
             "no vocabulary word is an allowed token (special or, with whole_words, word pieces)")


def test_spurious_delta_names_the_keyword(tiny):
    gen, f, _ = tiny
    detector = digin.load_segmenter("tiny_grounded_sam")
    api_line(lambda: digin.SpuriousFinder(gen, f, detector, delta=2), "delta must be a fraction of the image",
             "e.g. delta=0.1")


def test_builders_name_their_keywords():
    api_line(lambda: digin.load_generator("tiny", source="nowhere"), "source must be one of pretrained, tiny, random_sd15")
    api_line(lambda: digin.load_segmenter("tiny_sam", num_points=0), "num_points must be an integer >= 1, got 0")
    api_line(lambda: digin.load_classifier("hf", pretrained=""), "pretrained")
    net = digin.load_classifier("tiny_a").model
    api_line(lambda: digin.wrap_classifier(net, [], 32, [0.5] * 3, [0.5] * 3), "class_names is empty",
             "pass class_names=")


def test_a_counterfactual_without_a_captioner_warns_as_the_cli_does(tiny_sd, segmenter):
    clf = digin.load_classifier("tiny_a")
    with pytest.warns(UserWarning, match=r"captioner=None — the caption is only the template .* an ablation") as seen:
        digin.Counterfactuals(tiny_sd, clf, segmenter)
    assert seen[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        digin.Counterfactuals(tiny_sd, clf, segmenter, captioner=TemplateCaptioner())  # chosen: no warning
        digin.NeuronCounterfactuals(tiny_sd, clf, segmenter)  # neuron_cf / npca caption with the template, as the CLI


def test_a_distilled_lcm_without_its_sampler_names_the_keyword(tmp_path):
    """A guidance-distilled LCM folder loaded with DDIM (load_generator's default) is refused, naming ``sampler=``."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    from digin_cli.generation.models import tiny_pipeline

    parts = tiny_pipeline(0, time_cond_proj_dim=32)
    LatentConsistencyModelPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=LCMScheduler.from_config(parts.scheduler.config),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).save_pretrained(tmp_path)
    gen, f = digin.load_generator(str(tmp_path), resolution=64), digin.load_classifier("tiny_a")
    api_line(lambda: digin.Disagreement(gen, f, f), "the DDIM sampler cannot run — use sampler=lcm")


def test_an_unreadable_or_foreign_file_names_the_apis_inputs_not_task_images(tmp_path):
    from digin_cli.api.real_images import as_input

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    api_line(lambda: as_input(broken, 64), "cannot read image", str(broken), "a PIL image or a [0, 1] tensor")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    api_line(lambda: as_input(notes, 64), "not an image file", "a PIL image or a [0, 1] tensor")
    good = tmp_path / "fox.png"
    Image.new("RGB", (80, 60), (200, 90, 30)).save(good)
    assert as_input(good, 64).image.shape == (1, 3, 64, 64)


def test_a_counterfactual_without_a_segmenter_warns_as_the_cli_does(tiny_sd, segmenter):
    clf = digin.load_classifier("tiny_a")
    with pytest.warns(UserWarning, match=r"segmenter=None — no foreground mask") as seen:
        digin.Counterfactuals(tiny_sd, clf, captioner=TemplateCaptioner())
    assert seen[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        digin.Counterfactuals(tiny_sd, clf, segmenter, captioner=TemplateCaptioner())  # given: no warning


def test_builder_keywords_are_checked_by_the_presets_schema():
    # The same schema as the command line's pre-flight: a type or a range is one line naming the keyword.
    api_line(lambda: digin.load_generator("tiny", num_steps="x"), "num_steps must be a positive integer, got 'x'",
             "num_steps=20")
    api_line(lambda: digin.load_generator("tiny", sampler="euler"), "sampler must be one of ddim, lcm, got euler")
    api_line(lambda: digin.load_classifier("tiny_a", width=0), "width must be an integer >= 1, got 0")
    api_line(lambda: digin.load_segmenter("tiny_sam", variant="mobile"), "variant must be one of sam_hq, sam")
    assert digin.load_generator("tiny", num_steps=3).num_steps == 3
