"""Confidence signals per unit, computed for all units at once with numpy.

Per token: logprob, entropy over the returned alternatives (renormalized: vLLM returns only the top k),
margin between the two best alternatives (sorted here: vLLM puts the sampled token first, not the best),
a weight (digits, identifiers and names count more than function words) and whether the token is a signal
at all: masked tokens (-9999) never are, and under constrained decoding neither are forced ones (about
0.0 with no other allowed alternative). Per unit: `reduceat` over every unit's token range at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from guardrails.logprobs.align import Unit
from guardrails.logprobs.records import records
from guardrails.logprobs.tokens import MASKED, TokenStream, floats, ints

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
_WEIGHTS: dict[str, float] = {}  # token -> weight: tokens repeat, so a vocabulary's worth is kept
_MAX_WEIGHTS = 200_000  # a vocabulary fits, an adversary does not


def token_weight(token: str) -> float:
    """How much a token's confidence matters: 2 digits, 1.5 identifiers and capitalized names, 1 words,
    0.5 punctuation and markup, 0.3 function words."""
    return float(token_weights((token,))[0])


def token_weights(tokens: Sequence[str]) -> np.ndarray:
    try:
        return floats(_look_up(tokens, _WEIGHTS))
    except KeyError:  # tokens not seen before: classify each new one once
        pass
    new = [token for token in dict.fromkeys(tokens) if token not in _WEIGHTS]
    if len(_WEIGHTS) + len(new) > _MAX_WEIGHTS:
        _WEIGHTS.clear()
        new = list(dict.fromkeys(tokens))
    weights = {token: _classify(token) for token in new}
    if len(_WEIGHTS) + len(weights) <= _MAX_WEIGHTS:
        _WEIGHTS.update(weights)
        weights = _WEIGHTS
    return floats(_look_up(tokens, weights))


def _look_up(tokens: Sequence[str], weights: dict[str, float]) -> Sequence[float]:
    """Every token's weight; one itemgetter over all tokens looks them up in one C loop (half the cost of
    mapping a lookup over them; it needs an exact dict, as a subclass's lookups go through Python)."""
    if len(tokens) < 2:  # an itemgetter of one key returns the value itself, not a tuple
        return [weights[token] for token in tokens]
    return itemgetter(*tokens)(weights)


def _classify(token: str) -> float:
    core = token.strip().lstrip("Ġ▁")
    if _DIGIT.search(core):
        return 2.0
    if not _WORD.search(core):
        return 0.5
    if core.lower() in FUNCTION_WORDS:
        return 0.3
    if _IDENTIFIER.search(core):
        return 1.5
    return 1.0


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


class UnitSignals(NamedTuple):  # a tuple: `records` builds every unit's at once
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
    low_spans: list[tuple[int, int]]  # char ranges in the stream text

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
    masked = lp <= MASKED + 1.0
    valid = np.isfinite(lp) & ~masked
    entropy, margin, alive = _spread(stream.alternatives)
    forced = (valid & (lp >= FORCED_LOGPROB) & (alive <= 1)) if constrained else np.zeros(len(lp), dtype=bool)
    weights = token_weights(stream.tokens)
    return TokenSignals(lp, valid & ~forced, forced, masked, entropy, margin, weights)


def _spread(alternatives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy (renormalized), margin between the best two, and live alternatives per token.

    Works on the (k, n) transpose: one contiguous row per alternative rank, so every step is an elementwise
    ufunc over all tokens (k is small; sorting k-wide rows one by one would cost more than all the math).
    NaN padding and masked alternatives become a finite floor whose exp() is exactly 0: no -inf math.
    """
    n, k = alternatives.shape
    live = alternatives.T.copy()
    if live.size and not live.min() > MASKED + 1.0:  # rare: NaN padding or masked alternatives
        dead = ~(live > MASKED + 1.0)
        np.putmask(live, dead, FLOOR)
        alive = k - np.count_nonzero(dead, axis=0)
    else:
        alive = np.full(n, k)
    if k < 2:
        return np.full(n, np.nan), np.full(n, np.nan), alive
    best = live[0].copy()
    second = np.full(n, FLOOR)
    for row in live[1:]:
        np.maximum(second, np.minimum(best, row), out=second)
        np.maximum(best, row, out=best)
    x = np.subtract(live, best, out=live)
    p = np.exp(x)
    z = p.sum(axis=0)
    entropy = np.log(z) - np.einsum("ij,ij->j", p, x) / z
    margin = best - second
    # With fewer than two live alternatives there is no distribution to measure.
    flat = alive < 2
    if flat.any():
        entropy[flat] = margin[flat] = np.nan
    return entropy, margin, alive


_BOUNDS = slice(Unit._fields.index("token_start"), Unit._fields.index("text_end") + 1)
assert Unit._fields[_BOUNDS] == ("token_start", "token_end", "text_start", "text_end")
# Rows of the per-token table whose sums over each unit's token range give every unit's sums; the first
# _PARTIAL rows are filled only where a token counts (zero elsewhere), the others are written whole.
_LP, _W, _ENTROPY, _MARGIN, _COUNT, _WLP, _SPREAD, _LOW, _FORCED, _MASKED = range(10)
_PARTIAL = 4


def unit_bounds(units: Sequence[Unit]) -> np.ndarray:
    """(units, 4) int64: each unit's token_start, token_end, text_start, text_end (four consecutive fields:
    four columns of the units transposed at once)."""
    columns = islice(zip(*units, strict=True), _BOUNDS.start, _BOUNDS.stop)
    return ints(chain.from_iterable(columns), 4 * len(units)).reshape(4, len(units)).T


def unit_signals(
    stream: TokenStream, ts: TokenSignals, units: Sequence[Unit], token_threshold: float,
    bounds: np.ndarray | None = None,
) -> list[UnitSignals]:
    """Signals of every unit; a token is low when its weighted logprob is under `token_threshold`.
    `bounds` is `unit_bounds(units)` when the caller already has it.

    Sums and minima over every unit's token range come from one `reduceat` each (units overlap: a call's
    segment holds its arguments), low spans from one vectorized pass over the runs of low tokens: no
    per-token Python work and no numpy call per unit.
    """
    if not units:
        return []
    used = ts.used
    n = len(used)
    if bounds is None:
        bounds = unit_bounds(units)
    table = np.empty((10, n + 1))
    table[:_PARTIAL] = 0.0
    table[_PARTIAL:, n] = 0.0  # the last column: the end of a unit that reaches the stream's end
    row = table[:, :n]
    np.copyto(row[_COUNT], used)
    np.copyto(row[_LP], ts.logprobs, where=used)
    np.multiply(row[_LP], ts.weights, out=row[_WLP])
    np.copyto(row[_W], ts.weights, where=used)
    low = used & (row[_WLP] < token_threshold)
    spread = used & np.isfinite(ts.entropy)
    np.copyto(row[_SPREAD], spread)
    np.copyto(row[_ENTROPY], ts.entropy, where=spread)
    np.copyto(row[_MARGIN], ts.margin, where=spread)
    np.copyto(row[_LOW], low)
    np.copyto(row[_FORCED], ts.forced)
    np.copyto(row[_MASKED], ts.masked)
    sums, mins = _range_reductions(table, np.where(used, ts.logprobs, np.inf), bounds[:, 0], bounds[:, 1])
    counts = np.rint(sums[[_COUNT, _FORCED, _MASKED, _LOW]]).astype(np.int64)
    tokens = counts[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = sums[_LP] / tokens
        weighted = np.where(sums[_W] > 0, sums[_WLP] / sums[_W], mean)
        entropy = sums[_ENTROPY] / sums[_SPREAD]
        margin = sums[_MARGIN] / sums[_SPREAD]
        low_share = counts[3] / tokens
        perplexity = np.exp(-mean)
    spans = _low_spans(stream, runs=_runs(low), bounds=bounds, has_low=counts[3] > 0)
    # Whole columns become Python values at once (None where a unit has no counted token): no per-unit branch.
    none = _where_any(tokens == 0)
    unsure = _where_any(np.isnan(entropy) if none is None else none | np.isnan(entropy))
    return records(UnitSignals, tokens.tolist(), counts[1].tolist(), counts[2].tolist(), _column(mean, none),
                   _column(weighted, none), _column(mins, none), _column(perplexity, none),
                   _column(entropy, unsure), _column(margin, unsure), _column(low_share, none), spans)


def _where_any(flags: np.ndarray) -> np.ndarray | None:
    return flags if flags.any() else None


def _column(values: np.ndarray, missing: np.ndarray | None) -> list[float | None]:
    """Python floats, None where `missing` (no counted token, or no token with two live alternatives)."""
    return values.tolist() if missing is None else np.where(missing, None, values).tolist()


def _range_reductions(table: np.ndarray, values: np.ndarray, s: np.ndarray, e: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Sums of each table row over [s, e) per range, and min(values[s:e]) (inf for empty ranges).

    `reduceat` over the interleaved bounds s0, e0, s1, e1...: its even results are the ranges (the odd ones,
    between one range's end and the next one's start, are dropped); an empty range yields one element
    there, hence the masks.
    """
    n = len(values)
    idx = np.empty(2 * len(s), dtype=np.int64)
    idx[0::2], idx[1::2] = s, e
    np.minimum(idx, n, out=idx)
    sums = np.add.reduceat(table, idx, axis=1)[:, 0::2]
    mins = np.minimum.reduceat(np.append(values, np.inf), idx)[0::2]
    empty = e <= s
    if empty.any():
        sums[:, empty] = 0.0
        mins[empty] = np.inf
    return sums, mins


def _runs(flags: np.ndarray) -> np.ndarray:
    """(start, end) token index pairs of consecutive True runs: the changes of the 0-padded flags alternate
    between a run's start and its end."""
    padded = np.zeros(len(flags) + 2, dtype=bool)
    padded[1:-1] = flags
    return np.flatnonzero(padded[1:] != padded[:-1]).reshape(-1, 2)


def _low_spans(stream: TokenStream, runs: np.ndarray, bounds: np.ndarray, has_low: np.ndarray
               ) -> list[list[tuple[int, int]]]:
    """Per unit, the char ranges (in the stream text, clipped to the unit) of the low runs in its tokens."""
    if not has_low.any():
        return [[] for _ in range(len(bounds))]
    s, e, text_s, text_e = bounds.T
    first = np.searchsorted(runs[:, 1], s, side="right")
    per_unit = np.where(has_low, np.maximum(np.searchsorted(runs[:, 0], e, side="left") - first, 0), 0)
    unit = np.repeat(np.arange(len(bounds)), per_unit)
    offsets = np.cumsum(per_unit) - per_unit
    run = np.arange(len(unit)) - offsets[unit] + first[unit]
    a = np.maximum(runs[run, 0], s[unit])
    b = np.minimum(runs[run, 1], e[unit]) - 1
    starts = np.maximum(stream.starts[a], text_s[unit])
    ends = np.minimum(stream.ends[b], text_e[unit])
    keep = ends > starts
    if not keep.all():  # a run clipped to nothing (zero-width tokens at a unit's edge)
        unit, starts, ends = unit[keep], starts[keep], ends[keep]
    pairs = list(zip(starts.tolist(), ends.tolist(), strict=True))
    # `unit` is sorted: each unit's spans are one slice of the pairs.
    cuts = np.searchsorted(unit, np.arange(len(bounds) + 1)).tolist()
    return list(map(pairs.__getitem__, map(slice, cuts, cuts[1:])))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
