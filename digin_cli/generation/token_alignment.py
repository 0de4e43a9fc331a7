"""Where a phrase's tokens sit in a prompt, and how a source prompt's token columns map to a target prompt's.

Prompt-to-prompt injection (:mod:`digin_cli.generation.attention`) replays the source prompt's cross-attention under
the target prompt; ``token_alignment`` is the ``(77, 77)`` matrix M with target attention = source attention @ M, built
word by word as the DiG-IN authors' remapping (with their unequal-count branch corrected, see :func:`match_words`)
and prompt-to-prompt's mass-keeping split of a source word over a longer target word.
``word_token_indices`` gives the token positions of the object words, whose attention makes the mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _words(text: str | Sequence[str]) -> list[str]:
    return text.split() if isinstance(text, str) else [w for part in text for w in part.split()]


def _word_tokens(tokenizer, word: str) -> list[int]:
    return list(tokenizer(word, add_special_tokens=False).input_ids)


def _prompt_tokens(tokenizer, prompt: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` (without BOS/EOS) tokenized word by word, and the token offset where each word starts."""
    ids, starts = [], []
    for word in prompt.split():
        starts.append(len(ids))
        ids += _word_tokens(tokenizer, word)
    whole = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    if ids != whole:
        raise ValueError(f"tokenizing {prompt!r} word by word does not give its token sequence")
    return ids, starts


def _phrase_span(tokenizer, prompt: str, words: str | Sequence[str], what: str) -> tuple[int, int]:
    """[start, end) positions in the 77-token sequence (BOS at 0) of the first occurrence of ``words``.

    The phrase has to start at a word boundary of the prompt and match whole tokens, so 'fox' matches 'fox,' but
    not 'foxes'.
    """
    phrase = [t for w in _words(words) for t in _word_tokens(tokenizer, w)]
    if not phrase:
        raise ValueError(f"no {what} words given")
    ids, starts = _prompt_tokens(tokenizer, prompt)
    for start in starts:
        if ids[start:start + len(phrase)] == phrase:
            begin, end = start + 1, start + 1 + len(phrase)  # +1 for the start-of-text token
            if end > tokenizer.model_max_length - 1:
                raise ValueError(f"{what} words {words!r} lie beyond the {tokenizer.model_max_length}-token window "
                                 f"of {prompt!r}")
            return begin, end
    raise ValueError(f"{what} words {words!r} not found in the {what} prompt {prompt!r}")


def word_token_indices(tokenizer, prompt: str, words: str | Sequence[str]) -> list[int]:
    """Positions of the tokens of ``words`` (a phrase, e.g. a class name) in ``prompt``'s 77-token sequence."""
    begin, end = _phrase_span(tokenizer, prompt, words, "given")
    return list(range(begin, end))


def _phrase_word_tokens(tokenizer, words: str | Sequence[str], begin: int) -> list[tuple[tuple[int, ...], list[int]]]:
    """(token ids, positions in the 77-token sequence) of each word of a phrase that starts at position ``begin``."""
    groups, position = [], begin
    for word in _words(words):
        ids = tuple(_word_tokens(tokenizer, word))
        groups.append((ids, list(range(position, position + len(ids)))))
        position += len(ids)
    return groups


def match_words(source: Sequence[Sequence[int]], target: Sequence[Sequence[int]],
                distance: Callable[[], torch.Tensor] | None = None) -> list[int]:
    """For each target word (its token ids), the index of the source word whose attention it takes over.

    As the DiG-IN authors' prompt-to-prompt word remapping, with their unequal-count branch corrected:

    1. a target word identical to a (not yet used) source word maps to it;
    2. the remaining target words are matched to the remaining source words by ``distance()`` (a
       ``(len(target), len(source))`` matrix of CLIP text-embedding cosine distances): with equal counts by the
       permutation of least total distance, otherwise each target word to its nearest source word. (The authors'
       unequal-count branch weights source words by softmax(+distance), i.e. the *farthest* word most.)

    When every source word is taken by identical words, the remaining target words choose among all source words.
    ``distance`` is only called when there is a choice to make.
    """
    match: list[int | None] = [None] * len(target)
    used: set[int] = set()
    for j, ids in enumerate(target):
        for i, src in enumerate(source):
            if i not in used and tuple(src) == tuple(ids):
                match[j] = i
                used.add(i)
                break
    rest_t = [j for j, m in enumerate(match) if m is None]
    rest_s = [i for i in range(len(source)) if i not in used] or list(range(len(source)))
    if not rest_t:
        return match
    if len(rest_s) == 1:
        for j in rest_t:
            match[j] = rest_s[0]
        return match
    if distance is None:
        raise ValueError("matching differing words needs their text embeddings: pass embed=")
    d = distance()[rest_t][:, rest_s]
    if len(rest_t) == len(rest_s) and len(rest_t) <= 7:  # 7! = 5040 candidates at most
        best = min(itertools.permutations(range(len(rest_s))),
                   key=lambda perm: float(sum(d[a, b] for a, b in enumerate(perm))))
        for a, b in enumerate(best):
            match[rest_t[a]] = rest_s[b]
    else:
        for a, b in enumerate(d.argmin(dim=1).tolist()):
            match[rest_t[a]] = rest_s[b]
    return match


def _occurrences(ids: list[int], starts: list[int], phrase: list[int]) -> list[int]:
    """Token offsets (in ``ids``, no BOS) of every non-overlapping whole-word occurrence of ``phrase``."""
    found, after = [], 0
    for start in starts:
        if start >= after and ids[start:start + len(phrase)] == phrase:
            found.append(start)
            after = start + len(phrase)
    return found


def token_alignment(tokenizer, source_prompt: str, target_prompt: str, source_words: str | Sequence[str],
                    target_words: str | Sequence[str], embed: Callable[[str], torch.Tensor] | None = None
                    ) -> torch.Tensor:
    """The ``(77, 77)`` matrix M mapping source cross-attention to a target prompt: ``target = source @ M``.

    For a word replacement (the target prompt is the source prompt with *every* occurrence of ``source_words``
    replaced by ``target_words``, as the DiG-IN authors replace the class name), at word level as they do: tokens
    outside the replaced words map 1:1 (shifted by the difference in token counts; the last source column is
    repeated when the target is shorter); inside each occurrence, each target word takes over one source word
    (:func:`match_words`: identical words one to one, the others by the CLIP text-embedding distance of the words in
    their prompts). An identical word maps token by token; otherwise the source word's columns are split over the
    target tokens that take it over with weight 1/k (k of them), as prompt-to-prompt's replacement mapper (Hertz et
    al., ``get_replacement_mapper_``): a 1 -> 4 token swap ("newt" -> "axolotl") keeps the word's attention mass
    instead of multiplying it by 4 (the authors' mean source column per target token does that).

    ``embed(prompt)`` returns the text encoder's ``(1, 77, D)`` (or ``(77, D)``) output for a prompt, e.g.
    ``StableDiffusion.encode_prompt``; a word's embedding is the mean over its token positions (the authors' mean
    CLIP token embedding). It is only needed when differing words have several candidates.
    Every source row of M inside the window sums to 1, so each remapped attention row keeps its total mass (1).
    """
    n = int(tokenizer.model_max_length)
    _phrase_span(tokenizer, source_prompt, source_words, "source")  # clear errors: words missing or out of window
    _phrase_span(tokenizer, target_prompt, target_words, "target")
    phrase_s = [t for w in _words(source_words) for t in _word_tokens(tokenizer, w)]
    phrase_t = [t for w in _words(target_words) for t in _word_tokens(tokenizer, w)]
    src, src_starts = _prompt_tokens(tokenizer, source_prompt)
    tgt, _ = _prompt_tokens(tokenizer, target_prompt)
    occurrences = _occurrences(src, src_starts, phrase_s)
    expected, pieces, pos = [], [], 0  # the target the source implies; (source offset, target offset) per occurrence
    for o in occurrences:
        expected += src[pos:o]
        pieces.append((o, len(expected)))
        expected += phrase_t
        pos = o + len(phrase_s)
    expected += src[pos:]
    if expected != tgt:
        raise ValueError(f"{source_prompt!r} and {target_prompt!r} must differ only in {source_words!r} -> "
                         f"{target_words!r} (every occurrence replaced)")

    def cell(row: int, col: int, value: float) -> None:  # +1: BOS; positions past the window are truncated away
        if col + 1 < n:
            mapping[min(row + 1, n - 1), col + 1] = value

    mapping = torch.zeros(n, n)
    mapping[0, 0] = 1.0
    pos_s = pos_t = 0
    for o, t in pieces:  # unchanged stretches before each occurrence: 1:1
        for k in range(o - pos_s):
            cell(pos_s + k, pos_t + k, 1.0)
        pos_s, pos_t = o + len(phrase_s), t + len(phrase_t)
    for k in range(n):  # the rest of the prompt, EOS and padding: 1:1, shifted
        if pos_t + k + 1 < n:
            cell(pos_s + k, pos_t + k, 1.0)

    s0, t0 = pieces[0][0] + 1, pieces[0][1] + 1  # words are matched once, on the first occurrence
    src_words = _phrase_word_tokens(tokenizer, source_words, s0)
    tgt_words = _phrase_word_tokens(tokenizer, target_words, t0)

    def distance() -> torch.Tensor:
        a = _word_embeddings(embed, target_prompt, tgt_words, n)
        b = _word_embeddings(embed, source_prompt, src_words, n)
        return 1.0 - F.cosine_similarity(a[:, None], b[None], dim=-1)

    match = match_words([ids for ids, _ in src_words], [ids for ids, _ in tgt_words],
                        distance if embed is not None else None)
    for o, t in pieces:
        for i, (src_ids, rows) in enumerate(src_words):
            takers = [(ids, columns) for (ids, columns), m in zip(tgt_words, match) if m == i]
            rows = [r - s0 + o for r in rows]
            if len(takers) == 1 and takers[0][0] == src_ids:  # identical word: token k to token k
                for k, c in enumerate(takers[0][1]):
                    cell(rows[k], c - t0 + t, 1.0)
                continue
            columns = [c - t0 + t for _, cs in takers for c in cs]
            for r in rows:
                for c in columns:
                    cell(r, c, 1.0 / len(columns))
    return mapping


def _word_embeddings(embed: Callable[[str], torch.Tensor], prompt: str,
                     groups: list[tuple[tuple[int, ...], list[int]]], n: int) -> torch.Tensor:
    """The mean text-encoder output over each word's token positions, ``(words, D)``."""
    with torch.no_grad():
        states = embed(prompt).detach().float()
    states = states.reshape(-1, n, states.shape[-1])[0]
    return torch.stack([states[positions].mean(0) for _, positions in groups])
