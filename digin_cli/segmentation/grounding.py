"""Text-prompted segmentation (DiffExplainer Sec. 3.3): GroundingDINO boxes for a phrase -> SAM masks -> object fraction.

DiffExplainer segments each explanation image with the class name as text: GroundingDINO (its ref. [34]) turns the
phrase into boxes, SAM (ref. [35]) turns every box into a mask, and ``r`` is the fraction of image pixels inside the
union of the masks. Both models are transformers' own (``GroundingDinoForObjectDetection`` with its processor's
``post_process_grounded_object_detection``; ``SamHQModel`` / ``SamModel`` through
:class:`~digin_cli.segmentation.sam.SamSegmenter`), loaded once at construction.

No box above the thresholds -> an empty mask and ``r = 0``, recorded as ``detected=False`` (the class is absent from
the image, the strongest evidence for a spurious feature in Eq. 6).

``tiny=True`` builds seeded tiny random models of the same classes (:func:`tiny_grounding_dino`, :func:`tiny_sam`) and
a BERT tokenizer from a small written vocabulary: the machinery runs anywhere, the boxes and masks are meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from digin_cli.errors import DiginError, hub_loading
from digin_cli.segmentation.sam import SamSegmenter

MODEL_TYPE = "grounding-dino"
MASK_SOURCES = ("sam", "boxes")
TINY_IMAGE_SIZE = 64

# The tiny tokenizer's vocabulary: BERT's specials, the punctuation GroundingDINO's prompts use, every letter as a
# word start and as a continuation piece (so any lower-case phrase tokenizes without [UNK]) and a few whole words.
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_TINY_WORDS = ["a", "an", "the", "of", "photo", "image", "dog", "cat", "fish", "bird", "tench", "goldfish", "shark"]


def tiny_bert_tokenizer():
    """A real ``BertTokenizer`` (WordPiece, lower-case) over a small written vocabulary; no hub access."""
    from transformers import BertTokenizer

    tokens = _SPECIALS + [".", ",", "-", "'"] + _LETTERS + [f"##{c}" for c in _LETTERS]
    tokens += [w for w in _TINY_WORDS if w not in tokens]
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(tokens)})


def tiny_grounding_dino_config(vocab_size: int, image_size: int = TINY_IMAGE_SIZE):
    """A tiny ``GroundingDinoConfig``: 4-stage Swin of width 8, 1-layer BERT of width 16, d_model 32, 10 queries."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 1, 1], window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # d_model must be a multiple of 32 (GroupNorm(32, d_model)); >= 2 decoder layers (the box heads are tied).
    return GroundingDinoConfig(backbone_config=backbone, text_config=text, num_queries=10,
                               encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=32,
                               encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=3,
                               encoder_n_points=2, decoder_n_points=2, max_text_len=32)


def tiny_grounding_dino(seed: int = 0, image_size: int = TINY_IMAGE_SIZE):
    """A seeded tiny random ``(model, processor)`` pair; ``save_pretrained`` both to get a loadable local folder."""
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    tokenizer = tiny_bert_tokenizer()
    config = tiny_grounding_dino_config(len(tokenizer), image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
    return model.eval(), GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_grounding_dino(pretrained: str):
    """Load ``(model, processor)`` through ``from_pretrained`` (hub id or local folder); failures -> DiginError."""
    from transformers import AutoConfig, AutoProcessor, GroundingDinoForObjectDetection

    pretrained = str(pretrained)
    with hub_loading(pretrained, what="GroundingDINO weights", local_what="GroundingDINO",
                     fix="or set segmentation.detector=/path/to/a/local/folder",
                     local_fix="point segmentation.detector= at a folder written by save_pretrained of the model and "
                               "its processor"):
        config = AutoConfig.from_pretrained(pretrained)
        if getattr(config, "model_type", None) != MODEL_TYPE:
            raise DiginError(f"segmentation.detector '{pretrained}' is a '{getattr(config, 'model_type', '?')}' "
                             f"checkpoint, not GroundingDINO — point segmentation.detector= at a {MODEL_TYPE} "
                             "checkpoint (e.g. IDEA-Research/grounding-dino-base)")
        model = GroundingDinoForObjectDetection.from_pretrained(pretrained, config=config)
        processor = AutoProcessor.from_pretrained(pretrained)
    return model.eval(), processor


def phrase(text: str) -> str:
    """GroundingDINO's prompt form: lower case, one phrase ending with a period ("tench." for "Tench")."""
    text = " ".join(str(text).replace("_", " ").lower().split()).rstrip(".")
    if not text:
        raise DiginError("the text to segment is empty — give the class name (or phrase) to look for")
    return text + "."


@dataclass
class TextMasks:
    """The result of :meth:`GroundedSam.segment_text` for ``B`` images.

    ``masks`` ``(B, 1, H, W)`` float {0, 1}, 1 = the phrase's object; ``fractions`` r per image (object pixels / all
    pixels); ``boxes`` / ``scores`` the kept detections per image (``(N_i, 4)`` xyxy pixels, ``(N_i,)``).
    """

    masks: torch.Tensor
    fractions: list[float]
    boxes: list[torch.Tensor] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)

    @property
    def detected(self) -> list[bool]:
        return [len(b) > 0 for b in self.boxes]


class GroundedSam:
    """``segmentation=grounded_sam`` / ``tiny_grounded_sam``: phrase -> GroundingDINO boxes -> SAM masks -> union.

    Args:
        detector: GroundingDINO hub id or local folder (model + processor); ignored with ``tiny=True``.
        pretrained: SAM / HQ-SAM hub id or local folder (as ``segmentation=sam_hq``); ignored with ``tiny=True``.
        variant: ``'sam_hq'`` (the DiG-IN segmenter; ``hq_token_only``) or ``'sam'`` (the paper's ref. [35]).
        threshold: box score threshold (max over the phrase's tokens of the sigmoid logits), as in transformers.
        text_threshold: token score threshold for a box's text label (only labels; boxes are kept by ``threshold``).
        masks: ``'sam'`` (box-prompted SAM masks, the paper's) or ``'boxes'`` (the boxes themselves; no SAM loaded).
        multimask: ask SAM for 3 masks per box and keep the best predicted IoU.
        tiny: seeded tiny random models instead of weights; ``seed`` seeds them.
        name, device: the config name; where the models run.
    """

    text_prompted = True
    active = True

    def __init__(self, detector: str | None = None, pretrained: str | None = None, variant: str = "sam_hq",
                 threshold: float = 0.35, text_threshold: float = 0.25, masks: str = "sam", multimask: bool = False,
                 tiny: bool = False, seed: int = 0, name: str | None = None,
                 device: str | torch.device | None = None):
        for key, value in (("threshold", threshold), ("text_threshold", text_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise DiginError(f"segmentation.{key} must be in [0, 1], got {value} — GroundingDINO scores are "
                                 "sigmoid probabilities")
        if masks not in MASK_SOURCES:
            raise DiginError(f"unknown segmentation.masks '{masks}' — use one of: {', '.join(MASK_SOURCES)}")
        self.threshold, self.text_threshold = float(threshold), float(text_threshold)
        self.mask_source = masks
        self.tiny = bool(tiny)
        self.name = name or "grounded_sam"
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.tiny:
            self.detector_source = None
            model, self.processor = tiny_grounding_dino(seed=seed)
        else:
            if not detector:
                raise DiginError("segmentation.detector is empty — set it to a GroundingDINO hub id or a local "
                                 "folder, or use segmentation=tiny_grounded_sam (no weights)")
            self.detector_source = str(detector)
            model, self.processor = load_grounding_dino(self.detector_source)
        self.model = model.to(self.device).requires_grad_(False)
        # SAM is SamSegmenter's (its loading, offline errors and prompt handling); only its box path is used here.
        self.sam = (SamSegmenter(pretrained=pretrained, variant=variant, multimask=multimask, tiny=tiny, seed=seed,
                                 ops=(), name=f"{self.name}.sam", device=self.device)
                    if masks == "sam" else None)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, text: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """GroundingDINO on ``(B, 3, H, W)`` images in [0, 1] -> per image the kept boxes ``(N, 4)`` (xyxy, pixels
        of the input size) and their scores ``(N,)``."""
        batch, _, height, width = images.shape
        pixels = [(im.detach().clamp(0.0, 1.0) * 255.0).round().to("cpu", torch.uint8) for im in images]
        inputs = self.processor(images=pixels, text=[phrase(text)] * batch, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
        outputs = self.model(**inputs)
        outputs.logits, outputs.pred_boxes = outputs.logits.float().cpu(), outputs.pred_boxes.float().cpu()
        found = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"].cpu(), threshold=self.threshold, text_threshold=self.text_threshold,
            target_sizes=[(height, width)] * batch)
        boxes = [r["boxes"].clamp(min=0).minimum(torch.tensor([width, height, width, height])) for r in found]
        return boxes, [r["scores"] for r in found]

    def box_mask(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Union mask ``(H, W)`` float {0, 1} of one image's boxes: SAM prompted with every box, or the boxes."""
        height, width = image.shape[-2:]
        if len(boxes) == 0:
            return torch.zeros(height, width)
        if self.sam is not None:
            return (self.sam.sam_mask(image, boxes=boxes) > 0).float()
        mask = torch.zeros(height, width)
        for x0, y0, x1, y1 in boxes.round().long().tolist():
            mask[y0:y1, x0:x1] = 1.0
        return mask

    def segment_text(self, images: torch.Tensor, text: str) -> TextMasks:
        """Segment the object named by ``text`` in ``(B, 3, H, W)`` (or ``(3, H, W)``) images in [0, 1]."""
        images = images[None] if images.dim() == 3 else images
        boxes, scores = self.detect(images, text)
        masks = torch.stack([self.box_mask(im.float(), b) for im, b in zip(images, boxes)])[:, None]
        return TextMasks(masks=masks.to(images.device), fractions=object_fractions(masks), boxes=boxes,
                         scores=scores)

    def __call__(self, images: torch.Tensor, text: str) -> TextMasks:
        return self.segment_text(images, text)

    def __repr__(self) -> str:
        source = "tiny" if self.tiny else self.detector_source
        sam = repr(self.sam) if self.sam is not None else "boxes"
        return (f"GroundedSam(name={self.name!r}, detector={source!r}, threshold={self.threshold}, "
                f"text_threshold={self.text_threshold}, masks={sam})")


def object_fractions(masks: torch.Tensor) -> list[float]:
    """r per image (DiffExplainer Sec. 3.3): the fraction of pixels segmented as the object; ``masks`` (B, 1, H, W)."""
    return [float(m.float().mean()) for m in masks]


__all__ = ["GroundedSam", "TextMasks", "object_fractions", "phrase", "tiny_grounding_dino", "tiny_bert_tokenizer",
           "tiny_grounding_dino_config", "load_grounding_dino", "MASK_SOURCES"]
