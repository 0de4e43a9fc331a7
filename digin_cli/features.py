"""Feature statistics of real images: what neuron tasks (DiG-IN Sec. 6) and DiffExplainer learn from a dataset.

A folder of images is streamed through the classifier in batches (read and prepared exactly as task inputs, see
:func:`digin_cli.data.images.image_batches`; never all in memory) to per-image penultimate features φ(x) — the
input of the linear head, DiG-IN's φ. Extraction over ImageNet train classes takes minutes, so
:class:`FeatureCache` keeps one safetensors entry per (classifier, file listing, resolution) under
``paths.cache_dir/features/``, written atomically under a file lock like the inversion cache.

From the features:

- :func:`class_feature_ranking`: Salient ImageNet's neuron importance for class c, mean φ_i over the class's
  images times the head weight W[c, i], highest first;
- :func:`npca`: class-wise "neural PCA" components (Neuhaus et al., ref. [54], the NPCA of DiG-IN Fig. 11), with
  their component value α_l (eigenvector-scaled, see its docstring);
- :func:`top_activating`: the images that activate a neuron or direction most (the baseline of Figs. 9-10);
  :func:`top_activating_in_folders` the same over many folders (all of ImageNet train, one class folder at a
  time, each through the cache), holding only the running top k.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from digin_cli.classifiers.base import Classifier
from digin_cli.data.images import CROP_FRACTION, image_batches
from digin_cli.io.progress import track
from digin_cli.io.tensor_cache import TensorCache


_FORMAT = "digin-features-1"


def classifier_key(cfg: Any) -> str:
    """A stable identity of a classifier config: its resolved values, plus size and mtime of a local checkpoint or
    weights file (replaced weights under the same path must not reuse old features)."""
    from omegaconf import DictConfig, OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for field in ("checkpoint", "pretrained"):
        path = values.get(field)
        if isinstance(path, str) and os.path.isfile(os.path.expanduser(path)):
            st = os.stat(os.path.expanduser(path))
            values[f"{field}_identity"] = [st.st_size, st.st_mtime_ns]
    return json.dumps(values, sort_keys=True, default=str)


class FeatureCache(TensorCache):
    """Per-image features on disk: one ``<key>.safetensors`` per (classifier, file listing, resolution); atomic
    entries and one extraction per key across parallel sweep jobs (:class:`TensorCache`)."""

    format = _FORMAT
    what = "feature cache"

    @staticmethod
    def key(classifier: str, files: Sequence[Path], resolution: int, crop_fraction: float = CROP_FRACTION) -> str:
        """sha256 of the classifier identity, the resolution and crop, and every file's absolute path, size, mtime."""
        digest = hashlib.sha256(json.dumps({"format": _FORMAT, "classifier": classifier, "resolution": int(resolution),
                                            "crop_fraction": float(crop_fraction)}, sort_keys=True).encode())
        for f in files:
            st = os.stat(f)
            digest.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def get(self, key: str, count: int | None = None) -> torch.Tensor | None:
        """The cached ``(N, F)`` features, or None (no entry, an unreadable one, or one of the wrong length)."""
        entry = self.read(key, ("features",))
        if entry is None:
            return None
        features = entry[0]["features"]
        if features.ndim != 2 or (count is not None and len(features) != count):
            return None
        return features

    def put(self, key: str, features: torch.Tensor, files: Sequence[Path]) -> Path:
        return self.write(key, {"features": features}, {"files": json.dumps([str(f) for f in files])})

    def get_or_compute(self, key: str, files: Sequence[Path], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self.once(key, lambda: self.get(key, len(files)), compute, lambda f: self.put(key, f, files))


@torch.no_grad()
def extract_features(classifier: Classifier, files: Sequence[Path], resolution: int, batch_size: int = 32,
                     description: str = "features", crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """``(N, F)`` float32 features of ``files`` on the CPU, streamed in batches through ``classifier``."""
    device = next(iter(classifier.buffers())).device
    chunks = [classifier.features(batch.to(device)).float().cpu()
              for batch in track(image_batches(files, resolution, batch_size, crop_fraction), description,
                                 total=-(-len(files) // batch_size))]
    return torch.cat(chunks)


def image_features(classifier: Classifier, files: Sequence[Path], resolution: int, cache: FeatureCache | None,
                   identity: str, batch_size: int = 32, description: str = "features",
                   crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """Features of ``files``, from ``cache`` when it holds them (keyed by ``identity``, see :func:`classifier_key`)."""
    compute = lambda: extract_features(classifier, files, resolution, batch_size, description,  # noqa: E731
                                       crop_fraction)
    if cache is None:
        return compute()
    return cache.get_or_compute(FeatureCache.key(identity, files, resolution, crop_fraction), files, compute)


def class_feature_ranking(features: torch.Tensor, weight: torch.Tensor, target: int, top_k: int) -> list[dict]:
    """Salient ImageNet's feature importance for class ``target``: ``mean_x φ_i(x) · W[target, i]`` over the class's
    images ``features`` ``(N, F)``; the ``top_k`` highest as rows (rank, feature, score, mean activation, weight)."""
    mean = features.float().mean(0)
    w = weight[target].float().cpu()
    scores = mean * w
    top = scores.topk(min(int(top_k), len(scores)))
    return [{"rank": r + 1, "feature": int(i), "score": float(s), "mean_activation": float(mean[i]),
             "weight": float(w[i])} for r, (s, i) in enumerate(zip(top.values, top.indices))]


@dataclass
class NPCA:
    """Class-wise NPCA components of class k (see :func:`npca`). Components are numbered from 0 in variance order,
    as in Neuhaus et al.'s code: DiG-IN Fig. 11's "great white shark comp. 1" is index 1 (the second)."""

    components: torch.Tensor
    """``(L, F)`` unit rows v_l in contribution space, ordered by variance."""
    variances: torch.Tensor
    """``(L,)`` eigenvalues of the contributions' covariance: the variance of ⟨c(x) − μ_k, v_l⟩ over the class's
    images (α_l's variance is this times ⟨v_l, 1⟩²)."""
    mean: torch.Tensor
    """``(F,)`` μ_k, the mean contribution over the class's images."""
    weight: torch.Tensor
    """``(F,)`` W[k], the class's head weights."""

    def scale(self, component: int) -> float:
        """⟨v_l, 1⟩: the eigenvector scale of Neuhaus et al. (``eigvec_scale=True``)."""
        return float(self.components[component].sum())

    def direction(self, component: int) -> tuple[torch.Tensor, float]:
        """``(u, offset)`` with α_l(x) = φ(x) · u + offset, i.e. u = ⟨v_l, 1⟩ v_l ⊙ W[k] and
        offset = −⟨v_l, 1⟩ v_l · μ_k: the feature-space direction :class:`digin_cli.objectives.FeatureActivation`
        maximises."""
        v, s = self.components[component], self.scale(component)
        return s * v * self.weight, -s * float(v @ self.mean)

    def alpha(self, features: torch.Tensor, component: int) -> torch.Tensor:
        """α_l(x) = ⟨W[k] ⊙ φ(x) − μ_k, v_l⟩ · ⟨v_l, 1⟩ for each row of ``features``."""
        v = self.components[component]
        return ((features.float() * self.weight - self.mean) @ v) * v.sum()


def npca(features: torch.Tensor, weight_row: torch.Tensor) -> NPCA:
    """Class-wise neural PCA of class k (Neuhaus et al. [54] of DiG-IN, Spurious ImageNet's ``neural_pca`` with
    ``eigvec_scale=True``) from its images' features ``(N, F)`` and head row ``weight_row`` = W[k].

    Contributions c(x) = W[k] ⊙ φ(x) (the per-feature terms of the class logit, which is Σ_i c_i(x) + b_k);
    μ_k = mean of c over the images; a centred PCA via ``torch.linalg.svd(C − μ_k)``, components ordered by
    variance S²/(N − 1) and numbered from 0; the component value α_l(x) = ⟨c(x) − μ_k, v_l⟩ · ⟨v_l, 1⟩.

    The scale ⟨v_l, 1⟩ makes the values add up: with all components, Σ_l α_l(x) = ⟨c(x) − μ_k, Σ_l v_l v_lᵀ 1⟩ =
    logit_k(x) − mean logit_k over the images (for x whose c(x) − μ_k lies in the components' span, e.g. the class's
    own images). It also makes α_l independent of v_l's arbitrary SVD sign, and each α_l covaries positively with
    the logit (its covariance is α_l's variance), so maximising α_l pushes toward the class. Signs are fixed to
    ⟨v_l, 1⟩ ≥ 0 only so that stored components are reproducible.
    """
    w = weight_row.detach().float().cpu()
    c = features.detach().float().cpu() * w
    mean = c.mean(0)
    _, s, vh = torch.linalg.svd(c - mean, full_matrices=False)
    signs = torch.where(vh.sum(1) < 0, -1.0, 1.0)
    return NPCA(vh * signs[:, None], s ** 2 / max(len(c) - 1, 1), mean, w)


def top_activating(features: torch.Tensor, direction: int | torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """Indices and values of the ``k`` rows of ``features`` with the highest φ_n (``direction`` an int) or φ · v."""
    values = features[:, direction] if isinstance(direction, int) else features.float() @ direction.float().cpu()
    top = values.topk(min(int(k), len(values)))
    return top.indices.tolist(), top.values.tolist()


def top_activating_in_folders(classifier: Classifier, folders: Sequence[Path], directions: dict, k: int,
                              resolution: int, cache: FeatureCache | None, identity: str, batch_size: int = 32,
                              crop_fraction: float = CROP_FRACTION) -> dict:
    """``{key: [(file, value), ...]}``: the ``k`` images of all ``folders`` with the highest φ_n (or φ · v) for
    each of ``directions`` (``{key: int | tensor}``), highest first. Folders are extracted one at a time through
    ``cache`` (one entry per folder, shared with class statistics of the same folder), so the whole of ImageNet
    train streams through with one folder's features and the running top k in memory; empty folders are skipped.
    """
    from digin_cli.data.images import image_files
    from digin_cli.errors import DiginError

    best: dict = {key: [] for key in directions}
    for folder in track(list(folders), "top activating images"):
        try:
            files = image_files(folder, "paths.imagenet_train")  # the listing class statistics use: same cache key
        except DiginError:  # an empty class folder
            continue
        feats = image_features(classifier, files, resolution, cache, identity, batch_size, Path(folder).name,
                               crop_fraction)
        for key, direction in directions.items():
            top, values = top_activating(feats, direction, k)
            merged = best[key] + [(files[i], v) for i, v in zip(top, values)]
            best[key] = sorted(merged, key=lambda fv: -fv[1])[:k]
    return best
