"""The learned cue of `jailbreak`: a logistic regression over the word unigrams and bigrams of a message.

The weights are a small vocabulary of n-grams in detectors/data/jailbreak_ngrams.json, written by
bench/train_jailbreak_model.py (its docstring and the file's header name the data and their licenses). Scoring
is one regex pass and a set of dictionary look-ups over at most `max_tokens` words, so a typical prompt costs
tens of microseconds and nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

MODEL_FILE = Path(__file__).parent / "data" / "jailbreak_ngrams.json"
_WORD = re.compile(r"[a-z0-9][a-z0-9']*")
CHARS_PER_TOKEN = 12  # only this many characters per counted word are lowered and split


def ngrams(text: str, max_tokens: int) -> set[str]:
    """The distinct lower-cased words and word pairs of the first `max_tokens` words."""
    words = _WORD.findall(text[: max_tokens * CHARS_PER_TOKEN].lower())[:max_tokens]
    return {*words, *map(" ".join, pairwise(words))}


@dataclass(frozen=True, slots=True)
class NgramModel:
    weights: dict[str, float]
    bias: float
    max_tokens: int

    def logit(self, grams: set[str]) -> float:
        # presence features scaled by 1/sqrt(n): long prompts do not win by length alone
        total = sum(self.weights.get(g, 0.0) for g in grams)
        return self.bias + total / math.sqrt(max(1, len(grams)))

    def score(self, text: str) -> tuple[float, int]:
        """(probability that `text` is a jailbreak prompt, how many distinct n-grams that rests on)."""
        grams = ngrams(text, self.max_tokens)
        return 1.0 / (1.0 + math.exp(-self.logit(grams))), len(grams)

    def strongest(self, text: str, top: int = 5) -> list[str]:
        """The n-grams of `text` that push hardest towards "jailbreak" (evidence for a finding)."""
        present = [(self.weights[g], g) for g in ngrams(text, self.max_tokens) if self.weights.get(g, 0.0) > 0]
        return [g for _, g in sorted(present, reverse=True)[:top]]


@lru_cache(maxsize=4)
def load(path: Path = MODEL_FILE) -> NgramModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    return NgramModel(weights=dict(data["weights"]), bias=float(data["bias"]), max_tokens=int(data["max_tokens"]))
