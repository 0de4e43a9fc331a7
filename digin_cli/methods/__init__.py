"""The methods on real images, as Python classes below the CLI tasks: one class per method, one verb each, returning
results that write nothing until ``result.save(folder)``. The tasks ``vce`` / ``neuron_cf`` / ``npca`` run the same
classes (:meth:`RealImageMethod.from_parts`) with their run's editor, cache and cutouts."""

from digin_cli.methods.counterfactuals import Counterfactuals, CounterfactualSettings
from digin_cli.methods.feature_edits import NPCA, FeatureEditSettings, NeuronCounterfactuals
from digin_cli.methods.real_image import EditSettings, Preparer, RealImageMethod, as_input
from digin_cli.methods.results import EditResult

__all__ = ["Counterfactuals", "CounterfactualSettings", "NeuronCounterfactuals", "NPCA", "FeatureEditSettings",
           "EditSettings", "EditResult", "Preparer", "RealImageMethod", "as_input"]
