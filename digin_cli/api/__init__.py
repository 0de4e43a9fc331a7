"""The Python API: builders that take keyword arguments, and one class per method with one verb each.

    import digin_cli as digin
    gen = digin.load_generator("sd15", dtype="bf16", device="cuda")
    f, g = digin.load_classifier("convnext_b", device="cuda"), digin.load_classifier("vit_b", device="cuda")
    result = digin.Disagreement(gen, f, g).generate("koala", seed=0)
    result.image, result.summary; result.save("out/koala")   # writes what `digin task=disagreement` writes

The method classes sit below the tasks: a CLI task is config -> components -> method -> writer, over the same code.
Nothing here imports a task or the runner. docs/api.md shows every method.
"""

from digin_cli.api.builders import load_classifier, load_generator, load_segmenter, wrap_classifier
from digin_cli.api.results import OptimisationResult

# One line per method module (add yours here and to __all__).
from digin_cli.api.disagreement import Disagreement  # noqa: E402
from digin_cli.api.neurons import NeuronVisualiser  # noqa: E402
from digin_cli.api.counterfactuals import Counterfactuals, CounterfactualSettings  # noqa: E402
from digin_cli.api.feature_edits import NPCA, FeatureEditSettings, NeuronCounterfactuals  # noqa: E402
from digin_cli.api.edits import EditResult  # noqa: E402

__all__ = [
    "load_generator", "load_classifier", "wrap_classifier", "load_segmenter",
    "OptimisationResult",
    "Disagreement",
    "NeuronVisualiser",
    "Counterfactuals", "CounterfactualSettings", "NeuronCounterfactuals", "NPCA", "FeatureEditSettings",
    "EditResult",
]
