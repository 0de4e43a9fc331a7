"""Prompts find a planted optimum at CLIP's real vocabulary size (issue 16 §1, proof (a); DiffExplainer Sec. 3.2, 4.4).

The objective is the negative cosine between the encoded prompt "a picture of <learned>" and the encoding of "a
picture of koala", at the positions the learned token changes (its own and EOS, where CLIP pools; earlier positions
are causally masked from it). Its optimum is the word "koala" itself. The text encoder is the tiny generator's: the
real CLIP tokenizer and a 49,408-row token table (width 32, random weights), so a hard prompt searches the same
vocabulary as with SD 1.5. Settings are the shipped defaults (``task=hard_prompt`` / ``task=explain`` composed from
conf/), so changing a default re-runs its proof.
"""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from digin_cli.configs import CONF_DIR, register
from digin_cli.optimize.settings import optim_settings
from digin_cli.generation.prompts import HardPrompt, SoftPrompt

PLANTED = "koala"
PREFIX = "a picture of"


def defaults(task: str):
    """The shipped task and optimiser settings of ``task=<task>``."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="test"):
        cfg = compose("config", overrides=[f"task={task}"])
    GlobalHydra.instance().clear()
    return cfg.task, optim_settings(cfg.optimizer)


def planted_cosine(sd):
    slot = 1 + len(sd.tokenizer(PREFIX, add_special_tokens=False).input_ids)
    target = sd.encode_prompt(f"{PREFIX} {PLANTED}")[0, slot:slot + 2].flatten()
    return lambda hidden: torch.nn.functional.cosine_similarity(hidden[0, slot:slot + 2].flatten(), target, dim=0)


def optimise(prompt, cosine, settings, lr=None):
    """The loop of PromptVariables without a sampler: the settings' optimiser and lr, the temperature schedule,
    one (Gumbel-sampled, for a hard prompt) encoding per step; returns the cosine per step."""
    optimizer = settings.optimizer([{"params": list(prompt.parameters()), "lr": settings.lr if lr is None else lr}])
    curve = []
    for it in range(settings.steps):
        if hasattr(prompt, "set_progress"):
            prompt.set_progress(it / max(settings.steps - 1, 1))
        loss = -cosine(prompt(sample=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(-loss.item())
    return curve


@pytest.fixture(scope="module")
def planted(tiny_sd):
    assert tiny_sd.text_encoder.get_input_embeddings().weight.shape[0] == 49408
    assert len(tiny_sd.tokenizer(PLANTED, add_special_tokens=False).input_ids) == 1
    return planted_cosine(tiny_sd)


def hard_prompt_runs(sd, cosine, lr=None):
    task, settings = defaults("hard_prompt")
    runs = []
    for seed in range(5):
        torch.manual_seed(seed)  # the Gumbel draws
        prompt = HardPrompt(sd.text_encoder, sd.tokenizer, str(task.prefix), int(task.num_tokens), str(task.init),
                            seed, float(task.tau), bool(task.whole_words), None, task.tau_end)
        initial = prompt.state()
        optimise(prompt, cosine, settings, lr)
        with torch.no_grad():
            final = cosine(prompt(sample=False)).item()
        runs.append((initial, prompt.state(), final))
    return runs


def test_hard_prompt_defaults_find_the_planted_word(tiny_sd, planted):
    # Measured with the defaults (Adam, lr 0.3, eps 1e-8, 200 steps, tau 2): 5/5 seeds decode "koala" with top
    # probability > 0.99; the old defaults (AdamW lr 0.01 eps 1e-4, N(0, 1) logits, tau 1) kept the seed's argmax in
    # 4/5 seeds and found it in none.
    # With optimizer.lr=0 no seed finds it (checked once): the initial argmax is a random word of ~33k.
    runs = hard_prompt_runs(tiny_sd, planted)
    found = [state["words"] == PLANTED or 1 - final < 1e-3 for _, state, final in runs]
    assert sum(found) >= 4, [(i["words"], s["words"], round(f, 4)) for i, s, f in runs]
    for (initial, state, _), ok in zip(runs, found):
        # The initial argmax means nothing: small logits, near-uniform probabilities over the whole words.
        assert initial["top_prob"][0] < 1e-4 and initial["entropy"][0] > 10
        if ok:
            assert state["text"] == f"{PREFIX} {PLANTED}" and state["top_prob"][0] > 0.9


def test_soft_prompt_defaults_reach_the_planted_encoding(tiny_sd, planted):
    # Soft prompts keep their defaults (AdamW lr 0.01, eps 1e-4, 200 steps): measured from cosine ~0.90 at the
    # random init past 0.99 within 10 steps and 0.999 within 100 (3 seeds); the row's norm ends at 1.3-1.5x CLIP's
    # mean token-embedding norm (the first layer norm makes the norm nearly free). With lr 0 the cosine stays ~0.90.
    task, settings = defaults("explain")
    assert settings.lr == 0.01 and settings.optimizer.keywords["eps"] == 1e-4
    for seed in range(2):
        prompt = SoftPrompt(tiny_sd.text_encoder, tiny_sd.tokenizer, PREFIX, int(task.num_tokens), str(task.init),
                            seed)
        with torch.no_grad():
            start = planted(prompt()).item()
        curve = optimise(prompt, planted, settings)
        with torch.no_grad():
            end = planted(prompt()).item()
        assert start < 0.95 and curve[99] > 0.999 and end > 0.999, (start, curve[99], end)
        norms = prompt.norms()
        assert 0.5 < norms["ratio"] < 2.0, norms
