"""Caption text rules: every caption starts with the filled template and fits SD's 77-token window."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from digin_cli.errors import DiginError


DEFAULT_TEMPLATE = "an image of a {}"
#: CLIP tokens a caption may use (without start/end tokens): SD's window is 77 including both, so 60 leaves room
#: for a few extra words (e.g. prompt-to-prompt edits) without silent truncation by the text encoder.
DEFAULT_MAX_TOKENS = 60

_ARTICLES = ("a", "an", "the")
# Generic caption openers a model may start with that would duplicate the template ("a photo of ...").
_OPENER = re.compile(
    r"^(?:(?:there|here)\s+(?:is|are)\s+|this\s+is\s+|it\s+is\s+)?"
    r"(?:(?:(?:an?|the)\s+)?(?:close-?up\s+|black\s+and\s+white\s+|colou?r\s+)?"
    r"(?:image|photo|photograph|picture|pic|painting|drawing|view|shot)\s+of\s+)?",
    re.IGNORECASE,
)



def normalize_space(text: str) -> str:
    """Strip and collapse every whitespace run (newlines, tabs, repeated spaces) to one space."""
    return " ".join(str(text).split())


def check_template(template: str) -> str:
    """Return ``template`` if it holds exactly one ``{}`` (where the class name goes); otherwise a DiginError."""
    template = str(template)
    if template.count("{}") != 1:
        raise DiginError(f"captioner.template must contain '{{}}' exactly once (where the class name goes), got "
                         f"{template!r} — e.g. captioner.template='an image of a {{}}'")
    return template


def fill_template(template: str, start_class: str) -> str:
    """The template with the class name in place of ``{}``, whitespace normalised (no ``str.format``: a template
    may contain other braces)."""
    return normalize_space(check_template(template).replace("{}", normalize_space(start_class), 1))


def _starts_with(text: str, head: str) -> bool:
    """``text`` starts with ``head`` (case-insensitive) and ``head`` ends at a word boundary of ``text``."""
    if not head or not text.lower().startswith(head.lower()):
        return False
    return len(text) == len(head) or not text[len(head)].isalnum()


def _drop_article(words: str) -> str:
    """``'an image of a'`` -> ``'an image of'`` (the article belongs to the caption's own noun phrase)."""
    parts = words.split(" ")
    return " ".join(parts[:-1]) if parts[-1].lower() in _ARTICLES else words


def _join(prefix: str, rest: str, sep: str = " ") -> str:
    rest = rest.strip()
    if not rest:
        return prefix
    if rest[0] in ",.;:!?":
        return prefix + rest
    return prefix + sep + rest


def force_prefix(text: str, template: str, start_class: str) -> str:
    """Make a generated caption start with the filled template ``prefix = template.replace('{}', start_class)``.

    Rules, in order (whitespace is collapsed first; matching is case-insensitive and only at word boundaries; the
    prefix keeps its own spelling, so the class words are exactly the ones prompt-to-prompt will swap):

    1. empty text -> ``prefix``.
    2. text already starts with the prefix -> ``prefix + rest``
       (``"An image of a RED FOX sitting"`` -> ``"an image of a red fox sitting"``).
    3. otherwise the text is a caption of its own. A leading opener that would duplicate the template is dropped:
       the template's words before ``{}`` less a final article (``"an image of"``) or a generic one
       (``"a photo of"``, ``"a picture of"``, ``"there is"``, ``"this is"``, ...). Then
       a. if what is left starts with the class name (after an optional article) it continues the prefix:
          ``"a photo of a red fox in the snow"`` -> ``"an image of a red fox in the snow"``;
       b. else it is appended after a comma:
          ``"a dog on grass"`` -> ``"an image of a red fox, a dog on grass"``,
          ``"an image of a dog on grass"`` -> ``"an image of a red fox, a dog on grass"``.
    """
    prefix = fill_template(template, start_class)
    text = normalize_space(text)
    if not text:
        return prefix
    if _starts_with(text, prefix):
        return _join(prefix, text[len(prefix):])
    rest = text
    lead = _drop_article(normalize_space(template.split("{}", 1)[0]))
    if lead and _starts_with(rest, lead):
        rest = rest[len(lead):].lstrip()
    else:
        rest = rest[_OPENER.match(rest).end():]
    name = normalize_space(start_class)
    body = rest
    first, _, after = rest.partition(" ")
    if first.lower() in _ARTICLES and after:
        body = after
    if _starts_with(body, name):
        return _join(prefix, body[len(name):])
    return _join(prefix, rest, sep=", ")


def join_continuation(prefix: str, continuation: str) -> str:
    """``prefix`` followed by text a model generated *after* it (a prompted caption's new part).

    If the continuation begins inside a word (no space, e.g. a WordPiece ``##es`` making ``fox`` -> ``foxes``), that
    fragment is dropped so the class words stay intact.
    """
    continuation = continuation.replace("\n", " ")
    if continuation[:1].isalnum():
        continuation = continuation.partition(" ")[2]
    return _join(prefix, normalize_space(continuation))


def fit_clip_tokens(caption: str, prefix: str = "", max_tokens: int = DEFAULT_MAX_TOKENS, tokenizer=None) -> str:
    """Cut ``caption`` at a word boundary so it has at most ``max_tokens`` CLIP tokens (start/end not counted).

    Words are removed from the end, never from ``prefix`` (the class words must survive); trailing punctuation left
    by the cut is stripped. ``tokenizer`` defaults to SD's CLIP tokenizer.
    """
    if tokenizer is None:
        from digin_cli.generation.tokenizer import clip_tokenizer

        tokenizer = clip_tokenizer()

    def count(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    caption = normalize_space(caption)
    if count(caption) <= max_tokens:
        return caption
    keep = len(normalize_space(prefix).split(" ")) if prefix else 0
    words = caption.split(" ")
    lo, hi = keep, len(words)  # largest n in [keep, len) with count(words[:n]) <= max_tokens (monotone in n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = " ".join(words[:max(lo, keep)]).rstrip(" ,;:-")
    return cut or caption


def image_hash(image: torch.Tensor) -> str:
    """sha256 of an image tensor's float32 values and shape: the cache key of an image with no given key."""
    x = image.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(x.shape)).encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()


def model_slug(model: str) -> str:
    """A file-name-safe name for a model: hub ids as ``owner--name``; local folders as ``<folder name>-<hash of the
    absolute path>`` (two folders with the same name do not share a cache)."""
    model = str(model)
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        resolved = str(path.resolve())
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().name) or "model"
        return f"{base}-{hashlib.sha256(resolved.encode()).hexdigest()[:10]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model.replace("/", "--")).strip("-") or "model"


