"""A hard prompt over ``task.vocabulary`` finds a brute-force top word end to end (issue 16 §1, proof (b); DiffExplainer
Sec. 4.4): "a picture of <word>" through the tiny LCM generator (4 steps, a new z every step), a classifier, and
Adam on the 50 words' logits with the shipped hard-prompt settings.

The tiny random UNet listens to its prompt only faintly: a word moves the image by ~0.6 % of what z moves it. A
random CNN cannot tell such words apart (two runs on different words reported the same loss to 4 digits), so the
classifier here is a probe of exactly what the words change: its class-1 logit is the image's projection on the
first principal direction of the 50 words' mean images (over the ranking z's). Along it, z still moves every word
alike (a common offset); the words' ranking is stable across z (that is what is checked as "words matter").
"""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from digin_cli.classifiers.base import Classifier
from digin_cli.configs import CONF_DIR, register
from digin_cli.optimize.settings import optim_settings
from digin_cli.errors import DiginError
from digin_cli.explainer import PromptExplainer
from digin_cli.generation.lcm import LCMSampler
from digin_cli.generation.prompts import HardPrompt, vocabulary_ids
from digin_cli.objectives import ClassCrossEntropy

WORDS = ("bee flower honey wasp tree car dog cat house river mountain sky sea boat bird fish apple bread chair table "
         "lamp book road bridge cloud snow fire stone sand grass leaf rose moon sun star train horse cow sheep goat "
         "lion tiger bear wolf fox owl duck frog snake egg").split()
PREFIX = "a picture of"
RANK_SEEDS = [10_000, 10_001, 10_002]  # the brute force's fixed z's; the optimisation draws its own
STEPS = 40  # of the default 200, for CI time: measured, the argmax is a top word by then (5/5 seeds)


class WordProbe(Classifier):
    """Two classes; logit 1 = scale · u·(x − μ), u the first principal direction of the word means; logit 0 =
    1000."""

    def __init__(self, word_images: torch.Tensor):
        means = word_images.flatten(2).mean(1)  # (W, D): each word's mean image over the ranking z's
        centre = means.mean(0)
        u = torch.linalg.svd(means - centre, full_matrices=False).Vh[0]
        spread = ((means - centre) @ u).std()
        linear = nn.Linear(u.numel(), 2)
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[1] = u * 3 / spread  # the words' mean logits spread by 3
            linear.bias[1] = -(u @ centre) * 3 / spread
            # z shifts the projection ~10x more than the words do; a far larger "other" logit keeps p(words) tiny
            # (as a real classifier's p(bee) starts) and −log p(words) linear in it, where z's shift is common to
            # every word instead of saturating some of them.
            linear.bias[0] = 1000.0
        size = word_images.shape[-1]
        super().__init__(nn.Sequential(nn.Flatten(), linear), ["other", "words"], size, (0.0,) * 3, (1.0,) * 3)

    def _logits_and_features(self, x):
        return self.model(x), x.flatten(1)


def composed(*overrides):
    """The shipped config of ``task=hard_prompt`` with ``overrides``."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="test"):
        cfg = compose("config", overrides=["task=hard_prompt", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def hard_prompt_defaults():
    cfg = composed(f"optimizer.steps={STEPS}", "optimizer.keep_images_every=100")
    return cfg.task, optim_settings(cfg.optimizer)


@pytest.fixture(scope="module")
def planted(tiny_lcm_sd):
    sampler = LCMSampler(tiny_lcm_sd)
    renders = []
    with torch.no_grad():
        for word in WORDS:
            cond = tiny_lcm_sd.encode_prompt(f"{PREFIX} {word}")
            for seed in RANK_SEEDS:
                z, noise = sampler.seeded_start(seed)
                renders.append(sampler.decode(sampler.sample(z, cond, noise=noise).latents).cpu())
    images = torch.cat(renders).view(len(WORDS), len(RANK_SEEDS), *renders[0].shape[1:])
    probe = WordProbe(images)
    objective = ClassCrossEntropy(probe, 1)
    with torch.no_grad():
        losses = torch.tensor([[objective(images[w, k][None], False)[0].item() for k in range(len(RANK_SEEDS))]
                               for w in range(len(WORDS))])
    return sampler, objective, losses


def test_words_matter_more_than_z(planted):
    _, _, losses = planted
    across_words = losses.mean(1).std()
    # z's common offset (every word's loss moves alike with z) cancels in the ranking and in the gradient; what
    # could reorder the words is each word's z-dependence relative to the others.
    relative = losses - losses.mean(0, keepdim=True)
    across_z = relative.std(1).mean()
    assert across_words > 3 * across_z, (across_words, across_z, losses.std(1).mean())


def test_hard_prompt_over_a_vocabulary_finds_a_top_word(tiny_lcm_sd, planted):
    sampler, objective, losses = planted
    task, settings = hard_prompt_defaults()
    explainer = PromptExplainer(tiny_lcm_sd, sampler, settings)
    vocabulary = vocabulary_ids(tiny_lcm_sd.tokenizer, WORDS)
    ranking = [WORDS[i] for i in losses.mean(1).argsort().tolist()]
    top5 = ranking[:5]
    outcomes = []
    for seed in range(5):
        torch.manual_seed(seed)  # the Gumbel draws
        prompt = explainer.hard_prompt(PREFIX, 1, str(task.init), seed, float(task.tau), bool(task.whole_words),
                                       vocabulary, task.tau_end)
        explanation = explainer.explain(prompt, objective, seed, num_samples=0)
        states = explanation.prompt_states
        assert len(states) == STEPS + 1 and states[-1]["sampled"] is None and states[0]["sampled"] in WORDS
        outcomes.append((states[0]["words"], explanation.text.removeprefix(f"{PREFIX} "), states[-1]["top_prob"][0]))
    found = [final in top5 for _, final, _ in outcomes]
    assert sum(found) >= 4, (top5, outcomes)
    for initial, final, _ in outcomes:
        assert initial in top5 or final != initial, (top5, outcomes)


def test_vocabulary_refuses_multi_token_and_missing_words(tmp_path, tiny_sd):
    tokenizer = tiny_sd.tokenizer
    assert vocabulary_ids(tokenizer, None) is None
    listed = tmp_path / "words.txt"
    listed.write_text("bee  # the class itself\nflower\n\nbee\n")
    assert vocabulary_ids(tokenizer, str(listed)) == vocabulary_ids(tokenizer, ["bee", "flower"])
    with pytest.raises(DiginError, match="'goldfinch' is 2 CLIP tokens .*one-token synonym"):
        vocabulary_ids(tokenizer, ["bee", "goldfinch"])
    with pytest.raises(DiginError, match="does not exist"):
        vocabulary_ids(tokenizer, str(tmp_path / "missing.txt"))
    with pytest.raises(DiginError, match="holds no words"):
        vocabulary_ids(tokenizer, ["  "])


def test_vocabulary_masks_every_other_token(tiny_sd):
    ids = vocabulary_ids(tiny_sd.tokenizer, ["bee", "flower", "honey"])
    prompt = HardPrompt(tiny_sd.text_encoder, tiny_sd.tokenizer, PREFIX, 2, vocabulary=ids, tau=2.0, tau_end=0.5)
    drawn = {i for _ in range(20) for i in prompt.one_hot(sample=True).argmax(-1).tolist()}
    assert drawn <= set(ids) and set(prompt.token_ids()) <= set(ids)
    state = prompt.state()  # near-uniform over the 3 words: entropy ~ log 3, top probability ~ 1/3
    assert abs(state["entropy"][0] - torch.log(torch.tensor(3.0)).item()) < 1e-3 and state["top_prob"][0] < 0.34
    prompt.set_progress(0.5)
    assert prompt.tau == pytest.approx(1.0)  # geometric: 2 -> 0.5
    with pytest.raises(DiginError, match="tau_end must be > 0"):
        HardPrompt(tiny_sd.text_encoder, tiny_sd.tokenizer, PREFIX, 1, tau_end=0)


@pytest.mark.parametrize("override", ["task.tau=0", "task.tau_end=-1", "task.tau_end=abc"])
def test_bad_temperatures_are_config_errors(override):
    from hydra.errors import HydraException

    from digin_cli.configs import check_config
    from digin_cli.schemas import type_error

    with pytest.raises(DiginError, match=override.split("=")[0] + " must be a number > 0"):
        try:  # as the CLI pre-flight: the schema refuses a type while composing, check_config a range
            cfg = composed(override)
        except HydraException as err:
            raise DiginError(type_error(err) or str(err)) from None
        check_config(cfg)
