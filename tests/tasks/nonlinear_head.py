"""A classifier whose head is not linear over its features (for the ranking / NPCA error tests)."""

from torch import nn

from digin_cli.classifiers.tiny import TinyClassifier


class MlpHeadClassifier(TinyClassifier):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        fc = self.model.fc
        self.model.fc = nn.Sequential(nn.Linear(fc.in_features, 16), nn.ReLU(), nn.Linear(16, fc.out_features))
        self.freeze()

    @property
    def num_features(self) -> int:
        return self.model.fc[0].in_features
