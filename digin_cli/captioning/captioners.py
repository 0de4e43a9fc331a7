"""Captioners: the template alone, or a transformers image-to-text model prompted with it (cached on disk)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from digin_cli.captioning.text import (DEFAULT_MAX_TOKENS, DEFAULT_TEMPLATE, check_template,
                                       fill_template, fit_clip_tokens, force_prefix, image_hash,
                                       join_continuation, model_slug, normalize_space)
from digin_cli.errors import DiginError, hub_loading
from digin_cli.io.atomic import atomic_write_json, tensor_to_pil

log = logging.getLogger(__name__)

#: Bumped whenever the post-processing changes what is stored, so stale cache entries are not served.
_CACHE_VERSION = 1
_FIX = "use captioner=none (the ablation: template-only captions)"


class Captioner(ABC):
    """Turns an image of the start class into a caption that starts with the filled template.

    ``caption(image, start_class, key=None)``: ``image`` is ``(1,3,H,W)`` (or ``(3,H,W)``) in ``[0,1]``;
    ``start_class`` the class name as written in prompts; ``key`` an optional content hash of the image used for
    caching (computed from the tensor when None). The result always starts with ``prefix(start_class)``.
    """

    name: str = "captioner"

    def __init__(self, template: str = DEFAULT_TEMPLATE):
        self.template = check_template(template)

    def prefix(self, start_class: str) -> str:
        return fill_template(self.template, start_class)

    @abstractmethod
    def caption(self, image: torch.Tensor, start_class: str, key: str | None = None) -> str: ...


class TemplateCaptioner(Captioner):
    """``captioner=none``: the template filled with the start class (``"an image of a red fox"``); no model."""

    def __init__(self, template: str = DEFAULT_TEMPLATE, name: str = "none", **_ignored: Any):
        super().__init__(template)
        self.name = name

    def caption(self, image: torch.Tensor, start_class: str, key: str | None = None) -> str:
        return self.prefix(start_class)

    def __repr__(self) -> str:
        return f"TemplateCaptioner(template={self.template!r})"


# Model types whose captioning can be prompted with text, and how (see HFCaptioner._inputs).
_PROMPTABLE = ("blip", "blip-2", "git", "vision-encoder-decoder")


class HFCaptioner(Captioner):
    """``captioner=hf``: a transformers image-to-text model, prompted with the filled template where possible.

    Args:
        model: hub id (e.g. ``Salesforce/blip-image-captioning-large``) or a local folder written by
            ``save_pretrained`` (model + processor, or image processor + tokenizer).
        template: the caption's forced start; ``{}`` is the start class.
        max_new_tokens, num_beams: generation settings (the official code: 20 and 3); decoding is deterministic
            (beam search, no sampling).
        max_tokens: the CLIP-token budget of a final caption (:func:`fit_clip_tokens`).
        condition: prompt the model with the filled template where the model takes a text prompt (BLIP, BLIP-2,
            GIT, VisionEncoderDecoder); other models caption unprompted and the template is forced afterwards.
        cache_dir: digin's cache root; captions go to ``<cache_dir>/captions/<model-slug>.json``. None: ``$DIGIN_CACHE``
            or ``~/.cache/digin``.
        device: where the model runs (default cpu).

    The model id is checked when the captioner is built (a missing / offline model fails fast with a DiginError);
    the weights are loaded once, on the first caption that is not in the cache.

    Cache: one JSON object per model, ``"<image key>|<start class>|<settings>" -> caption``, where ``<settings>``
    is a short hash of template, generation settings and post-processing version, so changing any of them never
    serves an old caption. Writes re-read the file under a file lock and replace it atomically, so concurrent sweep
    jobs merge their entries. A local folder whose weights change in place keeps its (stale) cache: delete the file.
    """

    def __init__(self, model: str, template: str = DEFAULT_TEMPLATE, max_new_tokens: int = 20, num_beams: int = 3,
                 cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, condition: bool = True, name: str = "hf"):
        super().__init__(template)
        if not model:
            raise DiginError(f"captioner.model is empty — set it to an image-to-text model id or folder, or {_FIX}")
        if int(max_new_tokens) < 1 or int(num_beams) < 1:
            raise DiginError(f"captioner.max_new_tokens and captioner.num_beams must be >= 1, got {max_new_tokens} "
                             f"and {num_beams}")
        if int(max_tokens) < 8 or int(max_tokens) > 75:
            raise DiginError(f"captioner.max_tokens must be in [8, 75] (SD's window is 77 with start/end), "
                             f"got {max_tokens}")
        self.name = name
        self.model_id = str(model)
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self.max_tokens = int(max_tokens)
        self.condition = bool(condition)
        self.device = torch.device(device if device is not None else "cpu")
        root = Path(os.path.expanduser(str(cache_dir or os.environ.get("DIGIN_CACHE",
                                                                        Path.home() / ".cache" / "digin"))))
        self.cache_root = root
        self.cache_path = root / "captions" / f"{model_slug(self.model_id)}.json"
        self.model_type = self._check_model()
        settings = {"v": _CACHE_VERSION, "template": self.template, "max_new_tokens": self.max_new_tokens,
                    "num_beams": self.num_beams, "max_tokens": self.max_tokens,
                    "condition": self.condition and self.model_type in _PROMPTABLE}
        self._settings = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        self._cache: dict[str, str] | None = None
        self._model = None
        self._processor = None  # a ProcessorMixin when the folder has one, else None
        self._image_processor = None
        self._tokenizer = None
        self.generate_calls = 0  # how many captions were actually computed (not served from the cache)

    def __repr__(self) -> str:
        return f"HFCaptioner(model={self.model_id!r}, template={self.template!r})"

    # ------------------------------------------------------------------------------------------------ loading
    def _loading(self):
        """Where the model's ``from_pretrained`` calls run: their failures become one line naming the fix."""
        return hub_loading(self.model_id, what="captioner", local_what="an image-to-text captioner", pronoun="it",
                           fix=f"set captioner.model=/path/to/a/local/folder, or {_FIX}",
                           local_fix="point captioner.model= at a folder written by save_pretrained of the model and "
                                     f"its processor, or {_FIX}")

    def _check_model(self) -> str:
        """Resolve the model's config (cheap, local when cached) and check it is an image-to-text model."""
        from transformers import AutoConfig

        with self._loading():
            config = AutoConfig.from_pretrained(self.model_id)
        model_type = str(getattr(config, "model_type", "") or "")
        supported = _image_to_text_types()
        if supported and model_type not in supported:
            raise DiginError(f"captioner.model '{self.model_id}' is a '{model_type}' model, not an image-to-text "
                             "model (e.g. Salesforce/blip-image-captioning-large, microsoft/git-base-coco) — "
                             f"set captioner.model= to one, or {_FIX}")
        return model_type

    def _load(self) -> None:
        """Load model and processor once."""
        if self._model is not None:
            return
        import transformers
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin

        auto_classes = [getattr(transformers, n) for n in ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
                        if hasattr(transformers, n)]
        model = None
        with self._loading():
            for i, auto in enumerate(auto_classes):
                try:
                    model = auto.from_pretrained(self.model_id)
                    break
                except ValueError:  # type not in this auto class's mapping (older transformers) -> the next one
                    if i == len(auto_classes) - 1:
                        raise
            processor = None
            try:
                processor = AutoProcessor.from_pretrained(self.model_id)
            except (OSError, ValueError, TypeError, KeyError):
                processor = None
            if isinstance(processor, ProcessorMixin) and getattr(processor, "tokenizer", None) is not None \
                    and getattr(processor, "image_processor", None) is not None:
                self._processor = processor
                self._image_processor, self._tokenizer = processor.image_processor, processor.tokenizer
            else:
                # No processor pairing the two (e.g. a ViT image processor with a CLIP tokenizer): AutoProcessor
                # returns the tokenizer alone or fails, so load the parts separately.
                self._image_processor = AutoImageProcessor.from_pretrained(self.model_id)
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self._model = model.to(self.device, torch.float32).eval()  # fp32 whatever the checkpoint's dtype
        gen = getattr(self._model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:  # set once (not per call: BLIP passes its own pad id)
            pad = getattr(self._tokenizer, "pad_token_id", None)
            gen.pad_token_id = pad if pad is not None else getattr(self._tokenizer, "eos_token_id", None)
        log.info("captioner %s loaded on %s", self.model_id, self.device)

    def unload(self) -> None:
        """Free the model (e.g. before the generator needs the GPU); it is reloaded on the next cache miss."""
        self._model = self._processor = self._image_processor = self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -------------------------------------------------------------------------------------------------- cache
    def _cache_key(self, key: str, start_class: str) -> str:
        return f"{key}|{normalize_space(start_class)}|{self._settings}"

    def _read_cache_file(self) -> dict[str, str]:
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("caption cache %s is unreadable (%s); starting it afresh", self.cache_path, err)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _lock(self):
        from filelock import FileLock

        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.cache_path) + ".lock", timeout=300)

    def _store(self, ckey: str, caption: str) -> None:
        from filelock import Timeout

        try:
            with self._lock():
                data = self._read_cache_file()  # entries other jobs wrote since we last read
                data[ckey] = caption
                atomic_write_json(self.cache_path, data)
        except Timeout:
            raise DiginError(f"caption cache lock {self.cache_path}.lock is held for more than 5 minutes — if no "
                             "other digin job is running, delete the .lock file") from None
        self._cache = data

    def cached(self, key: str, start_class: str) -> str | None:
        """The cached caption for an image key and class, or None."""
        if self._cache is None:
            self._cache = self._read_cache_file()
        ckey = self._cache_key(key, start_class)
        if ckey not in self._cache:  # another job may have written it since we read the file
            self._cache = self._read_cache_file()
        return self._cache.get(ckey)

    # ---------------------------------------------------------------------------------------------- captioning
    def caption(self, image: torch.Tensor, start_class: str, key: str | None = None) -> str:
        key = key or image_hash(image)
        hit = self.cached(key, start_class)
        if hit is not None:
            return hit
        caption = self.generate(image, start_class)
        self._store(self._cache_key(key, start_class), caption)
        return caption

    def generate(self, image: torch.Tensor, start_class: str) -> str:
        """Compute a caption (no cache): generate, force the template prefix, fit the CLIP budget."""
        self._load()
        prefix = self.prefix(start_class)
        inputs, prompt_ids = self._inputs(tensor_to_pil(image).convert("RGB"), prefix)
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": False}
        with torch.inference_mode():
            out = self._model.generate(**inputs, **kwargs)
        self.generate_calls += 1
        ids = out.sequences if hasattr(out, "sequences") else out
        text = self._tokenizer.decode(ids[0], skip_special_tokens=True)
        caption = None
        if prompt_ids is not None:
            prompt_text = normalize_space(self._tokenizer.decode(prompt_ids, skip_special_tokens=True))
            full = normalize_space(text)
            if prompt_text and full.lower().startswith(prompt_text.lower()):
                # The model continued the prompt: keep the template's own spelling, add only what it generated.
                caption = join_continuation(prefix, full[len(prompt_text):])
        if caption is None:
            caption = force_prefix(text, self.template, start_class)
        from digin_cli.generation.tokenizer import clip_tokenizer

        return fit_clip_tokens(caption, prefix, self.max_tokens, clip_tokenizer(str(self.cache_root)))

    def _inputs(self, pil, prefix: str) -> tuple[dict[str, torch.Tensor], list[int] | None]:
        """Model inputs for one image, and the prompt's token ids (None when the model is not prompted)."""
        mt, tok = self.model_type, self._tokenizer
        prompt = self.condition and mt in _PROMPTABLE and (self._processor is not None or mt not in ("blip", "blip-2"))
        if prompt and mt in ("blip", "blip-2") and self._processor is not None:
            enc = self._processor(images=pil, text=prefix, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in enc.items()}
            ids = enc["input_ids"][0].tolist()
            return inputs, ids
        if self._processor is not None:
            enc = self._processor(images=pil, return_tensors="pt")
            pixel_values = enc["pixel_values"]
        else:
            pixel_values = self._image_processor(images=pil, return_tensors="pt")["pixel_values"]
        inputs = {"pixel_values": pixel_values.to(self.device, torch.float32)}
        if not prompt:
            return inputs, None
        ids = tok(prefix, add_special_tokens=False)["input_ids"]
        if mt == "git":  # GIT: [CLS] + prompt, without the trailing [SEP] the tokenizer would add
            ids = [tok.cls_token_id] + ids
            inputs["input_ids"] = torch.tensor([ids], device=self.device)
        else:  # vision-encoder-decoder: the decoder starts from its start token followed by the prompt
            cfg = self._model.config
            start = getattr(self._model.generation_config, "decoder_start_token_id", None)
            start = start if start is not None else getattr(cfg, "decoder_start_token_id", None)
            if start is None:
                start = tok.bos_token_id
            ids = [start] + ids
            inputs["decoder_input_ids"] = torch.tensor([ids], device=self.device)
        return inputs, ids


def _image_to_text_types() -> set[str]:
    """Model types the image-to-text auto classes can load (empty if this transformers hides the mappings)."""
    types: set[str] = set()
    try:
        from transformers.models.auto import modeling_auto as ma
    except ImportError:
        return types
    for name in ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES"):
        types.update(getattr(ma, name, {}) or {})
    return types
