"""Objects in images, listed by a vision-language model: the candidate prompts of ``task=neuron task.objects=auto``
(DiG-IN Sec. 6: the authors caption a neuron's top activating ImageNet training images with CogAgent-VQA as
"[objects]" and score every word with 8 plain SD samples).

Any transformers model of the captioner group works, loaded with transformers' auto classes:

- an image-text-to-text (chat) model is asked :data:`PROMPT` (default ``captioner=objects``:
  ``Qwen/Qwen2-VL-2B-Instruct``, a 2B instruction-tuned VLM that follows "list the objects" reliably and fits any
  GPU; CogAgent's 18B are too heavy for a default);
- an image-to-text model (BLIP, GIT, a VisionEncoderDecoder) captions the image unprompted.

The answer is cut into noun phrases (commas, line breaks, "and", prepositions, articles, verbs in -ing) and each
phrase's last word, its head noun, is a candidate ("a wooden table" -> "table"). Candidates are ranked by how many
images name them, ties by first appearance. Answers are cached per (model, prompt, image file) on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from digin_cli.errors import DiginError, hub_loading
from digin_cli.io.atomic import atomic_write_json

log = logging.getLogger(__name__)

PROMPT = "List the objects visible in this image as a comma-separated list of short nouns. Answer with the list only."
_STOP = set("""a an the this that these those some any its their his her my our your of in on at to for from with by
over under near behind above below into onto off up down out and or but is are was were be been being has have had
there here it they he she we you i image picture photo photograph photography shows showing background foreground
view close closeup left right top bottom front side next other several many few one two three four five lot lots
part parts piece pieces kind type""".split())


def nouns(text: str) -> list[str]:
    """Head nouns of the noun phrases in ``text``, in order, without repeats (see the module docstring)."""
    found: list[str] = []
    for chunk in re.split(r"[,;:\n.()\[\]/*•]+|\s-\s|\d+\.", text.lower()):
        words = [w for w in re.findall(r"[a-z][a-z'-]*", chunk)]
        phrase: list[str] = []
        for word in words + ["and"]:  # a stop word closes the current phrase
            if word in _STOP or word.endswith("ing"):
                if phrase and len(phrase[-1]) >= 3 and phrase[-1] not in found:
                    found.append(phrase[-1])
                phrase = []
            else:
                phrase.append(word.strip("'-"))
    return found


class ObjectLister:
    """List objects in image files with the captioner group's ``model`` (see the module docstring).

    Args:
        model: hub id or local folder of a transformers image-text-to-text or image-to-text model.
        prompt: the question for chat models.
        max_new_tokens: generation budget of one answer.
        cache_dir: digin's cache root; answers go to ``<cache_dir>/objects/<sha of model + prompt>.json``.
        device: where the model runs.
    """

    def __init__(self, model: str, prompt: str = PROMPT, max_new_tokens: int = 60,
                 cache_dir: str | os.PathLike | None = None, device=None):
        from transformers import AutoConfig

        if not model:
            raise DiginError("task.objects=auto needs a vision-language model but captioner.model is empty — pass "
                             "captioner=objects (or captioner.model=<image-text-to-text model id or folder>)")
        self.model_id, self.prompt, self.max_new_tokens = str(model), str(prompt), int(max_new_tokens)
        self.device = str(device or "cpu")
        with hub_loading(self.model_id, what="the object lister", pronoun="it",
                         fix="set captioner.model=/path/to/folder, or pass task.objects=[...]",
                         local_fix="point captioner.model= at a model folder, or pass task.objects=[...]"):
            config = AutoConfig.from_pretrained(self.model_id)
        from transformers.models.auto import modeling_auto as ma

        chat_types = set(getattr(ma, "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", {}) or {})
        caption_types = set(getattr(ma, "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", {}) or {}) | chat_types
        self.model_type = str(getattr(config, "model_type", ""))
        if self.model_type not in caption_types:
            raise DiginError(f"captioner.model '{self.model_id}' is a '{self.model_type}' model, not an "
                             "image-text-to-text or image-to-text model — set captioner.model= to one (e.g. "
                             "Qwen/Qwen2-VL-2B-Instruct), or pass task.objects=[...]")
        self.chat = self.model_type in chat_types and self.model_type not in ("vision-encoder-decoder", "blip", "git")
        key = hashlib.sha256(json.dumps([self.model_id, self.prompt, self.max_new_tokens]).encode()).hexdigest()[:16]
        root = Path(os.path.expanduser(str(cache_dir or Path.home() / ".cache" / "digin")))
        self.cache_path = root / "objects" / f"{key}.json"
        self._model = self._processor = self._tokenizer = None
        self.generate_calls = 0

    def _load(self):
        """Model + processor (or image processor + tokenizer), once, through transformers' auto classes."""
        if self._model is None:
            import transformers
            from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

            model = None
            for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
                auto = getattr(transformers, name, None)
                try:
                    model = auto.from_pretrained(self.model_id) if auto is not None else None
                except ValueError:  # not in this auto class's mapping: the next one
                    continue
                if model is not None:
                    break
            if model is None:
                raise DiginError(f"cannot load '{self.model_id}' as an image-to-text model — set captioner.model= "
                                 "to one, or pass task.objects=[...]")
            self._model = model.to(self.device).eval()
            processor = AutoProcessor.from_pretrained(self.model_id)
            if hasattr(processor, "image_processor"):
                self._processor, self._tokenizer = processor, processor.tokenizer
            else:  # e.g. a ViT image processor with a separate tokenizer
                self._processor, self._tokenizer = AutoImageProcessor.from_pretrained(self.model_id), \
                    AutoTokenizer.from_pretrained(self.model_id)
        return self._model

    @torch.no_grad()
    def answer(self, image) -> str:
        """The model's answer for one PIL image (no cache); greedy decoding, so answers are reproducible."""
        model = self._load()
        self.generate_calls += 1
        if self.chat:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self._processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self._processor(images=image, text=text, return_tensors="pt")
        else:
            inputs = self._processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        if self.chat or "input_ids" in inputs:  # decoder-only: the answer follows the prompt
            out = out[:, inputs["input_ids"].shape[1]:]
        return self._tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def answers(self, files: Sequence[Path]) -> dict[str, str]:
        """``{file: answer}``, from the cache where it holds them (keyed by path, size and mtime)."""
        from PIL import Image

        try:
            cache = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        result, changed = {}, False
        for f in files:
            st = os.stat(f)
            key = f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}"
            if key not in cache:
                with Image.open(f) as im:
                    cache[key] = self.answer(im.convert("RGB"))
                changed = True
            result[str(f)] = cache[key]
        if changed:
            atomic_write_json(self.cache_path, cache)
        return result

    def objects(self, files: Sequence[Path], folder: Path | None = None) -> list[str]:
        """Candidate objects of ``files``: head nouns of the answers, most often named first. With ``folder`` the
        answers and their nouns are written to ``folder/objects_listed.json``."""
        answers = self.answers(files)
        per_image = {f: nouns(a) for f, a in answers.items()}
        counts = Counter(n for found in per_image.values() for n in found)
        order = list(dict.fromkeys(n for found in per_image.values() for n in found))
        ranked = sorted(order, key=lambda n: (-counts[n], order.index(n)))
        if folder is not None:
            atomic_write_json(Path(folder) / "objects_listed.json",
                              {"model": self.model_id, "prompt": self.prompt if self.chat else None,
                               "images": [{"file": f, "answer": answers[f], "nouns": per_image[f]} for f in answers],
                               "candidates": ranked})
        return ranked
