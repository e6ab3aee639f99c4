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
from itertools import pairwise, repeat
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
        total = sum(map(self.weights.get, grams, repeat(0.0)))  # map: the look-ups stay in C
        return self.bias + total / math.sqrt(max(1, len(grams)))

    def grams(self, text: str) -> set[str]:
        """The n-grams of `text` this model reads: computed once, then passed to `probability` and `strongest_of`."""
        return ngrams(text, self.max_tokens)

    def probability(self, grams: set[str]) -> float:
        """The probability that the text of these n-grams is a jailbreak prompt."""
        return 1.0 / (1.0 + math.exp(-self.logit(grams)))

    def score(self, text: str) -> tuple[float, int]:
        """(probability that `text` is a jailbreak prompt, how many distinct n-grams that rests on)."""
        grams = self.grams(text)
        return self.probability(grams), len(grams)

    def strongest(self, text: str, top: int = 5) -> list[str]:
        """The n-grams of `text` that push hardest towards "jailbreak" (evidence for a finding)."""
        return self.strongest_of(self.grams(text), top)

    def strongest_of(self, grams: set[str], top: int = 5) -> list[str]:
        """`strongest` for n-grams already computed."""
        weights = self.weights
        present = [(weights[g], g) for g in grams & weights.keys() if weights[g] > 0]  # sorted below: order-free
        return [g for _, g in sorted(present, reverse=True)[:top]]


@lru_cache(maxsize=4)
def load(path: Path = MODEL_FILE) -> NgramModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    return NgramModel(weights=dict(data["weights"]), bias=float(data["bias"]), max_tokens=int(data["max_tokens"]))
