"""digin: investigate image classifiers by optimising Stable Diffusion inputs (DiG-IN, DiffExplainer)."""

__version__ = "0.1.0"
