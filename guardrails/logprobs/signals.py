"""Confidence signals per unit, computed for all units at once with numpy.

Per token: logprob, entropy over the returned alternatives (renormalized: vLLM returns only the top k),
margin between the two best alternatives (sorted here: vLLM puts the sampled token first, not the best),
a weight (digits, identifiers and names count more than function words) and whether the token is a signal
at all: masked tokens (-9999) never are, and under constrained decoding neither are forced ones (about
0.0 with no other allowed alternative). Per unit: reductions over its token range via prefix sums.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from guardrails.logprobs.align import Unit
from guardrails.logprobs.tokens import MASKED, TokenStream

FLOOR = -1e4  # stands for "no alternative" below every real logprob (vLLM clamps at -9999)
FORCED_LOGPROB = -1e-4  # a forced token's probability is 1 up to float error

_FUNCTION_WORDS_TEXT = (
    "a an the of to in on at by for with from and or but if then than as is are was were be been being "
    "it its this that these those there here i you he she we they me him her us them my your our their "
    "do does did not no so such can could will would shall should may might must have has had"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\w")
_IDENTIFIER = re.compile(r"_|[a-z][A-Z]|[./:@#]\w|^[A-Z]")
_WEIGHTS: dict[str, float] = {}


def token_weight(token: str) -> float:
    """How much a token's confidence matters: 2 digits, 1.5 identifiers and capitalized names, 1 words,
    0.5 punctuation and markup, 0.3 function words."""
    weight = _WEIGHTS.get(token)
    if weight is None:
        core = token.strip().lstrip("Ġ▁")
        if _DIGIT.search(core):
            weight = 2.0
        elif not _WORD.search(core):
            weight = 0.5
        elif core.lower() in FUNCTION_WORDS:
            weight = 0.3
        elif _IDENTIFIER.search(core):
            weight = 1.5
        else:
            weight = 1.0
        if len(_WEIGHTS) > 200_000:  # tokens repeat; a vocabulary fits, an adversary does not
            _WEIGHTS.clear()
        _WEIGHTS[token] = weight
    return weight


def token_weights(tokens: tuple[str, ...]) -> np.ndarray:
    known = list(map(_WEIGHTS.get, tokens))  # one C-level pass; tokens repeat, so misses are rare
    if None in known:
        known = [w if w is not None else token_weight(t) for w, t in zip(known, tokens, strict=True)]
    return np.array(known, dtype=np.float64)


@dataclass(slots=True)
class TokenSignals:
    """Per-token arrays of one stream."""

    logprobs: np.ndarray
    used: np.ndarray  # bool: counts as a confidence signal
    forced: np.ndarray
    masked: np.ndarray
    entropy: np.ndarray
    margin: np.ndarray
    weights: np.ndarray


@dataclass(slots=True)
class UnitSignals:
    tokens: int  # tokens that count
    forced: int
    masked: int
    mean: float | None  # mean logprob
    weighted_mean: float | None
    min: float | None
    perplexity: float | None
    entropy: float | None
    margin: float | None
    low_share: float | None
    low_spans: list[tuple[int, int]] = field(default_factory=list)  # char ranges in the stream text

    def compact(self) -> dict[str, object]:
        return {
            "tokens": self.tokens,
            "mean": _r(self.mean),
            "min": _r(self.min),
            "ppl": _r(self.perplexity),
            "entropy": _r(self.entropy),
            "margin": _r(self.margin),
            "low_share": _r(self.low_share),
            **({"forced": self.forced} if self.forced else {}),
            **({"masked": self.masked} if self.masked else {}),
        }


def token_signals(stream: TokenStream, constrained: bool) -> TokenSignals:
    lp = stream.logprobs
    alt = stream.alternatives
    masked = lp <= MASKED + 1.0
    valid = np.isfinite(lp) & ~masked
    n = len(lp)
    if alt.shape[1] >= 2:
        # NaN padding and masked alternatives become a finite floor whose exp() is exactly 0: no -inf math.
        live = np.where(alt > MASKED + 1.0, alt, FLOOR)
        ordered = np.sort(live, axis=1)  # ascending: best last
        best, second = ordered[:, -1], ordered[:, -2]
        alive = (live > FLOOR).sum(axis=1)
        spread = alive >= 2  # with fewer than two live alternatives there is no distribution to measure
        x = live - best[:, None]
        p = np.exp(x)
        z = p.sum(axis=1)
        entropy = np.where(spread, np.log(z) - (p * x).sum(axis=1) / z, np.nan)
        margin = np.where(spread, best - second, np.nan)
    else:
        entropy = np.full(n, np.nan)
        margin = np.full(n, np.nan)
        alive = np.isfinite(alt).sum(axis=1) if alt.shape[1] else np.ones(n, dtype=np.int64)
    forced = (valid & (lp >= FORCED_LOGPROB) & (alive <= 1)) if constrained else np.zeros(len(lp), dtype=bool)
    weights = token_weights(stream.tokens)
    return TokenSignals(lp, valid & ~forced, forced, masked, entropy, margin, weights)


def unit_signals(
    stream: TokenStream, ts: TokenSignals, units: Sequence[Unit], token_threshold: float
) -> list[UnitSignals]:
    """Signals of every unit; a token is low when its weighted logprob is under `token_threshold`."""
    if not units:
        return []
    used = ts.used
    lp0 = np.where(used, ts.logprobs, 0.0)
    low = used & (lp0 * ts.weights < token_threshold)
    spread = used & np.isfinite(ts.entropy)
    columns = np.stack([
        used.astype(np.float64), lp0, lp0 * ts.weights, np.where(used, ts.weights, 0.0),
        spread.astype(np.float64), np.where(spread, ts.entropy, 0.0), np.where(spread, ts.margin, 0.0),
        low.astype(np.float64), ts.forced.astype(np.float64), ts.masked.astype(np.float64),
    ])
    prefix = np.concatenate([np.zeros((columns.shape[0], 1)), np.cumsum(columns, axis=1)], axis=1)
    s = np.fromiter((u.token_start for u in units), dtype=np.int64, count=len(units))
    e = np.fromiter((u.token_end for u in units), dtype=np.int64, count=len(units))
    sums = prefix[:, e] - prefix[:, s]
    mins = _range_min(np.where(used, ts.logprobs, np.inf), s, e)
    runs = _runs(low)
    count, lp_sum, wlp_sum, w_sum, spread_n, ent_sum, margin_sum, low_sum, forced_sum, masked_sum = sums.tolist()
    mins_list = mins.tolist()
    out = []
    for i, unit in enumerate(units):
        n = int(count[i] + 0.5)
        if n == 0:
            out.append(UnitSignals(0, int(forced_sum[i]), int(masked_sum[i]), *([None] * 7)))
            continue
        mean = lp_sum[i] / n
        spread = spread_n[i]
        out.append(UnitSignals(
            tokens=n,
            forced=int(forced_sum[i] + 0.5),
            masked=int(masked_sum[i] + 0.5),
            mean=mean,
            weighted_mean=wlp_sum[i] / w_sum[i] if w_sum[i] > 0 else mean,
            min=mins_list[i],
            perplexity=math.exp(-mean),
            entropy=ent_sum[i] / spread if spread else None,
            margin=margin_sum[i] / spread if spread else None,
            low_share=low_sum[i] / n,
            low_spans=_spans_in(stream, runs, unit) if low_sum[i] else [],
        ))
    return out


def _range_min(values: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """min(values[s:e]) per range (inf for empty ranges), one reduceat call for all ranges."""
    padded = np.append(values, np.inf)
    idx = np.empty(2 * len(s), dtype=np.int64)
    idx[0::2], idx[1::2] = s, e
    mins = np.minimum.reduceat(padded, np.minimum(idx, len(values)))[0::2]
    return np.where(e > s, mins, np.inf)


def _runs(flags: np.ndarray) -> np.ndarray:
    """(start, end) token index pairs of consecutive True runs."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def _spans_in(stream: TokenStream, runs: np.ndarray, unit: Unit) -> list[tuple[int, int]]:
    """Char ranges (in the stream text, clipped to the unit) of the low runs inside a unit's tokens."""
    out = []
    first = int(np.searchsorted(runs[:, 1], unit.token_start, side="right"))
    last = int(np.searchsorted(runs[:, 0], unit.token_end, side="left"))
    for a, b in runs[first:last].tolist():
        start = max(int(stream.starts[max(a, unit.token_start)]), unit.text_start)
        end = min(int(stream.ends[min(b, unit.token_end) - 1]), unit.text_end)
        if end > start:
            out.append((start, end))
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
