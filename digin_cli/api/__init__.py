"""The Python API: builders that take keyword arguments, and one class per method with one verb each.

    import digin_cli as digin
    gen = digin.load_generator("sd15", dtype="bf16", device="cuda")
    f, g = digin.load_classifier("convnext_b", device="cuda"), digin.load_classifier("vit_b", device="cuda")
    result = digin.Disagreement(gen, f, g).generate("koala", seed=0)
    result.image, result.summary; result.save("out/koala")   # writes what `digin task=disagreement` writes

The method classes sit below the tasks: a CLI task is config -> components -> method -> writer, over the same code.
Nothing here imports a task or the runner. docs/api.md shows every method.
"""

from digin_cli.api.builders import (load_classifier, load_generator, load_segmenter, optimizer_settings,
                                     wrap_classifier)
from digin_cli.api.results import ExplanationResult, OptimisationResult

# One line per method module (add yours here and to __all__).
from digin_cli.api.disagreement import Disagreement
from digin_cli.api.neurons import NeuronVisualiser
from digin_cli.api.explanations import PromptExplainer
from digin_cli.api.spurious import SpuriousFinder
from digin_cli.api.counterfactuals import Counterfactuals, CounterfactualSettings
from digin_cli.api.feature_edits import NPCA, FeatureEditSettings, NeuronCounterfactuals
from digin_cli.api.edits import EditResult

__all__ = [
    "load_generator", "load_classifier", "wrap_classifier", "load_segmenter", "optimizer_settings",
    "OptimisationResult", "ExplanationResult",
    "Disagreement",
    "NeuronVisualiser",
    "PromptExplainer",
    "SpuriousFinder",
    "Counterfactuals", "CounterfactualSettings", "NeuronCounterfactuals", "NPCA", "FeatureEditSettings",
    "EditResult",
]
