"""digin as a library: every method on tiny random models, from Python, without Hydra on this side.

    python scripts/api_example.py [output folder]       # about a minute on a CPU

Tiny random models make noise-like images: this shows the calls, not the science. For real models, swap the names
("sd15" / "lcm_lora", "convnext_b" / "vit_b", "grounded_sam") and pass device="cuda". docs/api.md explains each call.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import digin_cli as digin
from digin_cli.features import npca


def main(out: Path) -> None:
    # Builders: conf/ presets by name, settings as keyword arguments.
    gen = digin.load_generator("tiny", num_steps=3)
    f, g = digin.load_classifier("tiny_a"), digin.load_classifier("tiny_b")
    settings, cutouts = digin.optimizer_settings("adam", steps=2, lr=0.1, augment={"num": 2})

    # Classifier disagreement (DiG-IN Eq. 3): f says goldfish, g does not.
    result = digin.Disagreement(gen, f, g, settings=settings, cutouts=cutouts).generate("goldfish", seed=0)
    print("disagreement", {k: round(v, 6) for k, v in result.summary.items() if "p_" in k})
    result.save(out / "disagreement")

    # Neuron visualisation (DiG-IN Eq. 6): maximise feature 5, starting from the better of two objects.
    neurons = digin.NeuronVisualiser(gen, f, settings=settings, cutouts=cutouts, object_samples=2)
    result = neurons.visualise(5, direction="max", objects=["sand", "water"])
    print("neuron", result.metrics["prompt"], round(result.summary["phi_init"], 4), "->",
          round(result.summary["phi_best"], 4))
    result.save(out / "neuron")

    # DiffExplainer: a soft prompt (Eq. 3-5) and a hard prompt (Sec. 4.4) through an LCM sampler.
    lcm = digin.load_generator("tiny_lcm")
    soft, _ = digin.optimizer_settings("prompt", steps=2)
    hard, _ = digin.optimizer_settings("hard_prompt", steps=2)
    explainer = digin.PromptExplainer(lcm, f, settings=soft, text_settings=hard)
    result = explainer.explain(class_="goldfish", feature=3, num_samples=2)
    print("soft prompt", result.explanation.prompt.nearest_tokens(3))
    result.save(out / "explain")
    result = explainer.explain_text(class_="goldfish", vocabulary=["honey", "wasp", "flower"], num_samples=2)
    print("hard prompt", repr(result.text))
    result.save(out / "hard_prompt")

    # Core / spurious features (DiffExplainer Eq. 6): segment the class in each feature's explanations.
    finder = digin.SpuriousFinder(lcm, f, digin.load_segmenter("tiny_grounded_sam"), settings=soft, num_samples=2)
    for result in finder.label("goldfish", [3, 5]):
        print("spurious", result.item["feature"], result.label, result.summary["E_r"])
        result.save(out / "spurious" / f"feature_{result.item['feature']}")

    # Real images (DiG-IN Sec. 5-6): invert a picture (DDIM), mask its object (tiny_sam) and edit it.
    picture = Image.new("RGB", (96, 80), (40, 120, 200))
    ImageDraw.Draw(picture).ellipse((30, 20, 70, 60), fill=(220, 90, 30))
    seg = digin.load_segmenter("tiny_sam")
    quick = {"inner_steps": 2}  # a short null-text inversion (the authors': 10 per step)
    cf = digin.Counterfactuals(gen, f, seg, settings=settings, cutouts=cutouts,
                               edit=digin.CounterfactualSettings(**quick))
    result = cf.explain(picture, target="goldfish", seed=0)  # from the predicted class
    print("counterfactual", result.metrics["start"], "->", result.metrics["target"],
          round(result.iterates[0].metrics["p_target"], 6), "->", round(result.summary["p_target_after"], 6))
    result.save(out / "vce")
    ncf = digin.NeuronCounterfactuals(gen, f, seg, settings=settings, edit=digin.FeatureEditSettings(**quick))
    result = ncf.explain(picture, neuron=5, direction="max")
    print("neuron counterfactual", round(result.summary["phi_before"], 4), "->", round(result.summary["phi_after"], 4))
    result.save(out / "neuron_cf")
    with torch.no_grad():  # NPCA components of goldfish from 8 (random) images of the class
        comps = npca(f.features(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))), f.head()[0][1])
    spur = digin.NPCA(gen, f, seg, components=comps, class_="goldfish", settings=settings,
                      edit=digin.FeatureEditSettings(**quick))
    result = spur.maximise(picture, component=1)
    print("npca", round(result.summary["alpha_before"], 4), "->", round(result.summary["alpha_after"], 4))
    result.save(out / "npca")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "api_example_outputs"))
