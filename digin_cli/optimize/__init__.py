"""DiG-IN's optimisation: the loop (:mod:`.loop`), what it optimises (:mod:`.variables`), its settings
(:mod:`.settings`) and the memory plan of a step (:mod:`.memory`)."""

from digin_cli.optimize.loop import DiginOptimizer, Iterate, LossFunction, OptimResult, Progress, linear_weights
from digin_cli.optimize.memory import (
    MemoryPlan,
    decode_activation_bytes,
    saved_bytes,
    step_activation_bytes,
)
from digin_cli.optimize.settings import OptimSettings, optim_settings
from digin_cli.optimize.variables import PromptVariables, SamplerDeltas, SamplerInputs, Variables, stream_seed

__all__ = [
    "DiginOptimizer", "Iterate", "LossFunction", "MemoryPlan", "OptimResult", "OptimSettings", "Progress",
    "PromptVariables", "SamplerDeltas", "SamplerInputs", "decode_activation_bytes", "linear_weights", "optim_settings",
    "saved_bytes", "step_activation_bytes", "stream_seed", "Variables",
]
