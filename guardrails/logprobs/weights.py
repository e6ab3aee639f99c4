"""How much a token's confidence matters: 2 digits, 1.5 identifiers and capitalized names, 1 words, 0.5
punctuation and markup, 0.3 function words.

Tokens repeat, so each distinct token string is classified once and kept as one int, its *code*: its length
times 8 plus its weight class. Reading a chat response then takes one dict lookup per token for both its
character span (`tokens._rebuild`) and its weight, instead of a `len` pass and a lookup pass.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from operator import itemgetter

import numpy as np

_FUNCTION_WORDS_TEXT = (
    "a an the of to in on at by for with from and or but if then than as is are was were be been being "
    "it its this that these those there here i you he she we they me him her us them my your our their "
    "do does did not no so such can could will would shall should may might must have has had"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\w")
_IDENTIFIER = re.compile(r"_|[a-z][A-Z]|[./:@#]\w|^[A-Z]")
# Weight by class; a code's low 3 bits are the class, the rest the token's length.
_WEIGHT_OF_CLASS = np.array([2.0, 1.5, 1.0, 0.5, 0.3])
_DIGITS, _IDENTIFIER_CLASS, _WORDS, _PUNCTUATION, _FUNCTION = range(5)
_CLASS_BITS = 3
_CLASS_MASK = (1 << _CLASS_BITS) - 1
_CODES: dict[str, int] = {}  # token -> code: a vocabulary's worth is kept
_MAX_CODES = 200_000  # a vocabulary fits, an adversary does not


def token_weight(token: str) -> float:
    return float(token_weights((token,))[0])


def token_weights(tokens: Sequence[str]) -> np.ndarray:
    """float64 weight of each token (read-only)."""
    return weights_of(token_codes(tokens))


def weights_of(codes: np.ndarray) -> np.ndarray:
    weights = _WEIGHT_OF_CLASS[codes & _CLASS_MASK]
    weights.flags.writeable = False
    return weights


def lengths_of(codes: np.ndarray) -> np.ndarray:
    """int64 length of each token, in characters."""
    return codes >> _CLASS_BITS


def token_codes(tokens: Sequence[str]) -> np.ndarray:
    """int64 code of each token (see the module's docstring); tokens not seen before are classified once."""
    try:
        return _pack(_look_up(tokens, _CODES))
    except KeyError:
        pass
    new = [token for token in dict.fromkeys(tokens) if token not in _CODES]
    if len(_CODES) + len(new) > _MAX_CODES:
        _CODES.clear()
        new = list(dict.fromkeys(tokens))
    codes = {token: _classify(token) | len(token) << _CLASS_BITS for token in new}
    if len(_CODES) + len(codes) <= _MAX_CODES:
        _CODES.update(codes)
        codes = _CODES
    return _pack(_look_up(tokens, codes))


def _look_up(tokens: Sequence[str], codes: dict[str, int]) -> Sequence[int]:
    """Every token's code; one itemgetter over all tokens looks them up in one C loop (half the cost of
    mapping a lookup over them; it needs an exact dict, as a subclass's lookups go through Python)."""
    if len(tokens) < 2:  # an itemgetter of one key returns the value itself, not a tuple
        return [codes[token] for token in tokens]
    return itemgetter(*tokens)(codes)


def _pack(codes: Sequence[int]) -> np.ndarray:
    return np.frombuffer(struct.pack(f"{len(codes)}q", *codes), dtype=np.int64)


def _classify(token: str) -> int:
    core = token.strip().lstrip("Ġ▁")
    if _DIGIT.search(core):
        return _DIGITS
    if not _WORD.search(core):
        return _PUNCTUATION
    if core.lower() in FUNCTION_WORDS:
        return _FUNCTION
    if _IDENTIFIER.search(core):
        return _IDENTIFIER_CLASS
    return _WORDS
