"""Learnable prompts in CLIP's token-embedding space (DiffExplainer Sec. 3.2 soft prompts, Sec. 4.4 hard prompts).

A prompt is the token sequence t = [SOS, prefix tokens, t_1 .. t_N, EOS, padding to 77] (paper Sec. 3.2, Fig. 4:
the prefix may be "" or e.g. "a texture of"); t_1 .. t_N are learnable. It is encoded by the text encoder's own
forward on ``input_ids``: a forward hook on ``get_input_embeddings()`` splices the learnable rows into their slots, so
the position embeddings, the causal mask and the final layer norm stay the library's (transformers 5's
``CLIPTextModel.forward`` takes no ``inputs_embeds``). The text encoder stays frozen; gradients reach only the rows.

- :class:`SoftPrompt`: the rows are free vectors (the paper's soft prompt, Eq. 3-5).
- :class:`HardPrompt`: the rows are ``gumbel_softmax(logits, hard=True) @ E`` for a logit vector over the vocabulary
  per token (Sec. 4.4): one-hot forward, straight-through softmax gradient backward; its text is the decoded argmax.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digin_cli.errors import DiginError

MAX_TOKENS = 77


def words_to_ids(tokenizer, text: str, what: str) -> list[int]:
    """Token ids of ``text`` without special tokens; a user error when the tokenizer splits it into nothing."""
    ids = tokenizer(str(text), add_special_tokens=False).input_ids
    if not ids:
        example = "'a texture of'" if what == "prefix" else "flower"
        raise DiginError(f"the prompt {what} '{text}' tokenizes to nothing — use visible words, e.g. {example}")
    return ids


def check_prompt(tokenizer, prefix: str = "", num_tokens: int = 1, init: str = "random") -> list[int]:
    """Validate prompt settings with the tokenizer alone (before any model loads); returns the prefix ids."""
    if int(num_tokens) < 0:
        raise DiginError(f"the number of learnable prompt tokens must be >= 0, got {num_tokens}")
    prefix_ids = words_to_ids(tokenizer, prefix, "prefix") if prefix else []
    if len(prefix_ids) + int(num_tokens) > MAX_TOKENS - 2:
        raise DiginError(f"prefix '{prefix}' ({len(prefix_ids)} tokens) + {num_tokens} learnable tokens exceed "
                         f"CLIP's {MAX_TOKENS - 2} — shorten the prefix or learn fewer tokens")
    if init != "random":
        words_to_ids(tokenizer, init, "init word")
    return prefix_ids


class SoftPrompt(nn.Module):
    """[SOS, prefix, N learnable embeddings, EOS, padding] encoded through a frozen CLIP text encoder.

    Args:
        text_encoder: the pipeline's ``CLIPTextModel`` (frozen).
        tokenizer: its ``CLIPTokenizer``.
        prefix: fixed text before the learnable tokens ("" in the paper's minimal t = [SOS, t_1, EOS]).
        num_tokens: N, the number of learnable tokens.
        init: ``random`` (rows drawn at the embedding matrix's per-dimension mean and spread) or a word (the word's
            token embeddings if it has exactly N tokens, else their mean in every row).
        seed: seeds the random initialisation.
    """

    def __init__(self, text_encoder, tokenizer, prefix: str = "", num_tokens: int = 1, init: str = "random",
                 seed: int = 0):
        super().__init__()
        # Not registered as submodules: the encoder is frozen and must not appear in parameters() / state_dict().
        self.__dict__["text_encoder"] = text_encoder
        self.tokenizer = tokenizer
        self.prefix, self.num_tokens = str(prefix), int(num_tokens)
        self.prefix_ids = check_prompt(tokenizer, self.prefix, self.num_tokens, str(init))
        start = 1 + len(self.prefix_ids)
        self.slots = list(range(start, start + self.num_tokens))
        # The slot ids are placeholders (their embeddings are replaced); never EOS, which marks the pooled position.
        ids = [tokenizer.bos_token_id, *self.prefix_ids, *[tokenizer.bos_token_id] * self.num_tokens,
               tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (MAX_TOKENS - len(ids))
        self.register_buffer("input_ids", torch.tensor([ids]), persistent=False)
        self._init_parameters(init, seed)

    # --- the parts a subclass changes -------------------------------------------------------------------------
    def _init_parameters(self, init: str, seed: int) -> None:
        self.embeddings = nn.Parameter(self._initial_rows(init, seed))

    def token_embeddings(self, sample: bool = True) -> torch.Tensor:
        """The N learnable rows ``(N, D)`` spliced into the slots."""
        return self.embeddings

    # --- shared ------------------------------------------------------------------------------------------------
    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight

    def _initial_rows(self, init: str, seed: int) -> torch.Tensor:
        matrix = self.embedding_matrix.detach().float().cpu()
        if init == "random":
            generator = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(self.num_tokens, matrix.shape[1], generator=generator)
            rows = matrix.mean(0) + matrix.std(0) * noise
        else:
            word_rows = matrix[words_to_ids(self.tokenizer, init, "init word")]
            rows = word_rows if len(word_rows) == self.num_tokens else word_rows.mean(0).expand(self.num_tokens, -1)
        return rows.clone().to(self.embedding_matrix.device)

    @contextlib.contextmanager
    def _spliced(self, rows: torch.Tensor):
        def splice(module, args, output):
            output = output.clone()
            output[:, self.slots] = rows.to(output.dtype)
            return output

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(splice)
        try:
            yield
        finally:
            handle.remove()

    def forward(self, sample: bool = True) -> torch.Tensor:
        """The prompt's encoder hidden states ``(1, 77, D)`` (float32), what ``encode_prompt`` returns for text."""
        with self._spliced(self.token_embeddings(sample)):
            hidden = self.text_encoder(self.input_ids.to(self.embedding_matrix.device), attention_mask=None)[0]
        return hidden.float()

    @torch.no_grad()
    def norms(self) -> dict:
        """The learned rows' L2 norms against CLIP's mean token-embedding norm: rows drifting far from it leave
        the text manifold the UNet was trained on (the soft prompt's risk; a hard prompt's rows are vocabulary
        rows)."""
        rows = self.token_embeddings(sample=False).float().norm(dim=-1)
        vocab = self.embedding_matrix.float().norm(dim=-1).mean().item()
        return {"row_norms": rows.tolist(), "vocab_mean_norm": vocab, "ratio": rows.mean().item() / vocab}

    def nearest_tokens(self, k: int = 5) -> list[list[str]]:
        """For each learnable row, the k vocabulary tokens nearest in cosine similarity, decoded: a readable hint."""
        with torch.no_grad():
            rows = F.normalize(self.token_embeddings(sample=False).float(), dim=-1)
            sims = rows @ F.normalize(self.embedding_matrix.float(), dim=-1).T
            sims[:, self.tokenizer.all_special_ids] = -float("inf")
            top = sims.topk(k, dim=-1).indices.tolist()
        return [[self.tokenizer.decode([i]).strip() for i in row] for row in top]


def vocabulary_ids(tokenizer, vocabulary) -> list[int] | None:
    """Token ids of a hard prompt's candidate words (``task.vocabulary``: a list of words or a text file, one word a
    line, ``#`` comments); None for the whole vocabulary. A hard prompt draws one token per slot, so a word CLIP
    splits into several tokens cannot be a candidate: it is refused rather than cut to its first piece."""
    if vocabulary is None or vocabulary == "":
        return None
    if isinstance(vocabulary, (str, Path)):
        path = Path(vocabulary).expanduser()
        if not path.is_file():
            raise DiginError(f"task.vocabulary file '{vocabulary}' does not exist — give a text file with one word a "
                             "line, or a list, e.g. task.vocabulary='[flower,honey,wasp]'")
        words = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        words = [str(w).strip() for w in vocabulary]
    ids: list[int] = []
    for word in filter(None, words):
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        if len(pieces) != 1:
            shown = " + ".join(tokenizer.convert_ids_to_tokens(pieces)) or "nothing"
            raise DiginError(f"task.vocabulary word '{word}' is {len(pieces)} CLIP tokens ({shown}); a hard prompt "
                             "picks one token per slot — drop it or use a one-token synonym")
        if pieces[0] not in ids:
            ids.append(pieces[0])
    if not ids:
        raise DiginError("task.vocabulary holds no words — list candidate words, e.g. task.vocabulary='[flower,honey]'")
    return ids


class HardPrompt(SoftPrompt):
    """Hard prompt (DiffExplainer Sec. 4.4): one logit vector over the vocabulary per learnable token.

    Training draws ``gumbel_softmax(logits, tau, hard=True)``: a one-hot row (a real vocabulary token, distributed as
    softmax(logits) whatever tau) in the forward pass, the relaxed softmax's gradient in the backward pass
    (straight-through), times the embedding matrix. Special tokens are masked out; ``whole_words`` keeps only
    whole-word tokens (``</w>``), as DEXTER does; ``vocabulary`` (token ids) keeps only those. The explanation is the
    decoded argmax, and final images are generated from that text.

    Args:
        tau: the Gumbel-softmax temperature (backward only: it sets how far the relaxed gradient reaches).
        whole_words: restrict the vocabulary to whole-word tokens.
        vocabulary: candidate token ids (:func:`vocabulary_ids`), or None for all allowed tokens.
        tau_end: anneal tau geometrically to this value over the optimisation (:meth:`set_progress`); None: fixed.
        (others as :class:`SoftPrompt`; ``init`` = ``random`` logits N(0, INIT_SCALE²), or a word whose first token
        starts with a logit margin of 5.)
    """

    INIT_SCALE = 1e-3
    """Random logits this small make the first samples uniform over the candidates (Gumbel noise has std 1.28): the
    initial argmax is a tie-breaker that the first optimiser step overturns, not a choice the text inherits."""

    def __init__(self, text_encoder, tokenizer, prefix: str = "", num_tokens: int = 1, init: str = "random",
                 seed: int = 0, tau: float = 1.0, whole_words: bool = False, vocabulary: list[int] | None = None,
                 tau_end: float | None = None):
        for name, value in (("tau", tau), ("tau_end", tau_end)):
            if value is not None and not float(value) > 0:
                raise DiginError(f"the Gumbel-softmax temperature task.{name} must be > 0, got {value} — pass e.g. "
                                 f"task.{name}=1.0")
        self._whole_words = bool(whole_words)  # read by _init_parameters during super().__init__
        self._vocabulary = None if vocabulary is None else [int(i) for i in vocabulary]
        super().__init__(text_encoder, tokenizer, prefix, num_tokens, init, seed)
        self.tau_start = self.tau = float(tau)
        self.tau_end = float(tau) if tau_end is None else float(tau_end)

    def _init_parameters(self, init: str, seed: int) -> None:
        vocab = self.embedding_matrix.shape[0]
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[self.tokenizer.all_special_ids] = False
        if self._whole_words:
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(vocab)))
            allowed &= torch.tensor([t is not None and t.endswith("</w>") for t in tokens])
        if self._vocabulary is not None:
            listed = torch.zeros(vocab, dtype=torch.bool)
            listed[self._vocabulary] = True
            if not (allowed & listed).any():
                raise DiginError("no task.vocabulary word is an allowed token (special or, with task.whole_words, "
                                 "word pieces) — list whole words")
            allowed &= listed
        self.register_buffer("mask", torch.where(allowed, 0.0, -float("inf")).to(self.embedding_matrix.device),
                             persistent=False)
        if init == "random":
            generator = torch.Generator().manual_seed(int(seed))
            logits = self.INIT_SCALE * torch.randn(self.num_tokens, vocab, generator=generator)
        else:
            logits = torch.zeros(self.num_tokens, vocab)
            logits[:, words_to_ids(self.tokenizer, init, "init word")[0]] = 5.0
        self.logits = nn.Parameter(logits.to(self.embedding_matrix.device))
        self.last_sample: list[int] | None = None

    def set_progress(self, fraction: float) -> None:
        """Anneal tau geometrically from ``tau`` (fraction 0) to ``tau_end`` (fraction 1)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.tau = self.tau_start * (self.tau_end / self.tau_start) ** fraction

    def one_hot(self, sample: bool = True) -> torch.Tensor:
        """``(N, V)`` one-hot rows: a straight-through Gumbel sample when ``sample``, else the argmax."""
        logits = self.logits + self.mask
        if sample:
            drawn = F.gumbel_softmax(logits, tau=self.tau, hard=True)
            self.last_sample = drawn.detach().argmax(-1).tolist()
            return drawn
        self.last_sample = None
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)

    def token_embeddings(self, sample: bool = True) -> torch.Tensor:
        return self.one_hot(sample) @ self.embedding_matrix.float()

    def token_ids(self) -> list[int]:
        """The current discrete tokens (argmax of the masked logits)."""
        return (self.logits + self.mask).argmax(-1).tolist()

    def text(self, ids: list[int] | None = None) -> str:
        """The prompt as text: prefix and the argmax tokens (or ``ids``), decoded (the textual explanation)."""
        return self.tokenizer.decode(self.prefix_ids + (self.token_ids() if ids is None else list(ids))).strip()

    @torch.no_grad()
    def state(self) -> dict:
        """Where the distribution stands: the argmax text and its learned words, per token its probability (the
        chance a sample draws it) and the entropy in nats, the current tau, and the words of the last training
        sample (what that iterate's image was generated from; None for an argmax render)."""
        probs = torch.softmax((self.logits + self.mask).float(), -1)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
        words = self.tokenizer.decode(self.token_ids()).strip()
        sampled = None if self.last_sample is None else self.tokenizer.decode(self.last_sample).strip()
        return {"text": self.text(), "words": words, "top_prob": probs.max(-1).values.tolist(),
                "entropy": entropy.tolist(), "tau": self.tau, "sampled": sampled}
