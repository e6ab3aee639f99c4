"""Confidence signals per unit, computed for all units at once with numpy.

Per token: logprob, entropy over the returned alternatives (renormalized: vLLM returns only the top k),
margin between the two best alternatives (sorted here: vLLM puts the sampled token first, not the best),
a weight (digits, identifiers and names count more than function words) and whether the token is a signal
at all: masked tokens (-9999) never are, and under constrained decoding neither are forced ones (about
0.0 with no other allowed alternative). Per unit: `reduceat` over every unit's token range at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, islice
from typing import NamedTuple

import numpy as np

from guardrails.logprobs.align import Unit
from guardrails.logprobs.records import records
from guardrails.logprobs.tokens import MASKED, TokenStream, ints
from guardrails.logprobs.weights import token_weights

FLOOR = -1e4  # stands for "no alternative" below every real logprob (vLLM clamps at -9999)
FORCED_LOGPROB = -1e-4  # a forced token's probability is 1 up to float error


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
    if constrained:
        forced = valid & (lp >= FORCED_LOGPROB) & (alive <= 1)
        used = valid & ~forced
    else:
        forced, used = np.zeros(len(lp), dtype=bool), valid
    weights = stream.weights if stream.weights is not None else token_weights(stream.tokens)
    return TokenSignals(lp, used, forced, masked, entropy, margin, weights)


def weighted_logprobs(ts: TokenSignals, where: np.ndarray) -> np.ndarray:
    """Logprob x weight of the tokens `where` selects: the scale `unit_signals` judges a token low on, so the
    scale a model's token statistics (and the relative token threshold derived from them) must be learned on."""
    return np.multiply(ts.logprobs[where], ts.weights[where])


def _spread(alternatives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | int]:
    """Entropy (renormalized), margin between the best two, and live alternatives per token (an int when
    every token has all k alive, the usual case).

    Works on the (k, n) transpose: one contiguous row per alternative rank, so every step is an elementwise
    ufunc over all tokens (k is small; sorting k-wide rows one by one would cost more than all the math).
    NaN padding and masked alternatives become a finite floor whose exp() is exactly 0: no -inf math.
    Results are written into arrays already made wherever the inputs are no longer needed.
    """
    n, k = alternatives.shape
    live = alternatives.T.copy()
    alive: np.ndarray | int = k
    if live.size and not np.minimum.reduce(live, axis=None) > MASKED + 1.0:  # rare: NaN padding or masked
        dead = ~(live > MASKED + 1.0)
        np.putmask(live, dead, FLOOR)
        alive = k - np.count_nonzero(dead, axis=0)
    if k < 2:
        return np.full(n, np.nan), np.full(n, np.nan), alive
    # The best and second best so far; after the first two ranks the second is their minimum (every value is
    # at least FLOOR, so this is max(FLOOR, min(...)) as the loop computes it for the later ranks).
    best, second = np.maximum(live[0], live[1]), np.minimum(live[0], live[1])
    lower = np.empty(n)
    for row in live[2:]:
        np.maximum(second, np.minimum(best, row, out=lower), out=second)
        np.maximum(best, row, out=best)
    x = np.subtract(live, best, out=live)
    p = np.exp(x)
    z = np.add.reduce(p, axis=0)
    weighted = np.einsum("ij,ij->j", p, x)
    weighted /= z
    entropy = np.log(z, out=z)
    entropy -= weighted
    margin = np.subtract(best, second, out=best)
    # With fewer than two live alternatives there is no distribution to measure.
    if not isinstance(alive, int):
        flat = alive < 2
        if flat.any():
            entropy[flat] = margin[flat] = np.nan
    return entropy, margin, alive


_BOUNDS = slice(Unit._fields.index("token_start"), Unit._fields.index("text_end") + 1)
assert Unit._fields[_BOUNDS] == ("token_start", "token_end", "text_start", "text_end")
# Rows of the per-token table whose sums over each unit's token range give every unit's sums: first the
# float rows (the first _PARTIAL filled only where a token counts, zero elsewhere), then the 0/1 flag rows
# whose sums are counts (exact in float64, so they convert to ints as they are).
_LP, _W, _ENTROPY, _MARGIN, _WLP, _COUNT, _FORCED, _MASKED, _LOW, _SPREAD = range(10)
_PARTIAL = 4
_COUNTS = slice(_COUNT, _LOW + 1)  # tokens, forced, masked, low
# Rows of the per-unit float results, converted to Python floats in one `tolist`.
_MEAN, _WEIGHTED, _MIN, _PERPLEXITY, _UNIT_ENTROPY, _UNIT_MARGIN, _LOW_SHARE = range(7)
_NONE_WITHOUT_TOKENS = [_MEAN, _WEIGHTED, _MIN, _PERPLEXITY, _LOW_SHARE]
_NONE_WITHOUT_SPREAD = [_UNIT_ENTROPY, _UNIT_MARGIN]


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
    per-token Python work and no numpy call per unit. Each numpy call costs microseconds of its own on
    arrays this small, so results are written into rows of shared arrays and converted together.
    """
    if not units:
        return []
    if bounds is None:
        bounds = unit_bounds(units)
    table, low = _token_table(ts, token_threshold)
    sums, mins = _range_reductions(table, _counted_logprobs(ts), bounds)
    counts = sums[_COUNTS].astype(np.int64)
    tokens, low_tokens = counts[0], counts[3]
    values = np.empty((7, len(bounds)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = np.divide(sums[_LP], tokens, out=values[_MEAN])
        np.copyto(values[_WEIGHTED], mean)
        np.divide(sums[_WLP], sums[_W], out=values[_WEIGHTED], where=sums[_W] > 0)
        values[_MIN] = mins
        np.exp(np.negative(mean, out=values[_PERPLEXITY]), out=values[_PERPLEXITY])
        np.divide(sums[_ENTROPY:_MARGIN + 1], sums[_SPREAD], out=values[_UNIT_ENTROPY:_UNIT_MARGIN + 1])
        np.divide(low_tokens, tokens, out=values[_LOW_SHARE])
    spans = _low_spans(stream, runs=_runs(low), bounds=bounds, has_low=low_tokens > 0)
    return records(UnitSignals, *counts[:3].tolist(), *_python_values(values, tokens == 0), spans)


def _token_table(ts: TokenSignals, token_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The (10, n + 1) per-token table (its last column zero: the end of a unit that reaches the stream's
    end) and which tokens are low."""
    used = ts.used
    n = len(used)
    table = np.empty((10, n + 1))
    table[:_PARTIAL] = 0.0
    table[_PARTIAL:, n] = 0.0
    row = table[:, :n]
    np.copyto(row[_LP], ts.logprobs, where=used)
    np.multiply(row[_LP], ts.weights, out=row[_WLP])
    np.copyto(row[_W], ts.weights, where=used)
    low = used & (row[_WLP] < token_threshold)
    spread = used & np.isfinite(ts.entropy)
    np.copyto(row[_ENTROPY], ts.entropy, where=spread)
    np.copyto(row[_MARGIN], ts.margin, where=spread)
    np.copyto(row[_COUNT], used)
    np.copyto(row[_FORCED], ts.forced)
    np.copyto(row[_MASKED], ts.masked)
    np.copyto(row[_LOW], low)
    np.copyto(row[_SPREAD], spread)
    return table, low


def _counted_logprobs(ts: TokenSignals) -> np.ndarray:
    """The logprobs of the tokens that count, inf elsewhere and in one more last place (for `_range_reductions`)."""
    values = np.empty(len(ts.used) + 1)
    values.fill(np.inf)
    np.copyto(values[:-1], ts.logprobs, where=ts.used)
    return values


def _python_values(values: np.ndarray, no_tokens: np.ndarray) -> list[list[float | None]]:
    """The rows of per-unit floats as Python values: None where a unit has no counted token (and for
    entropy and margin also where none of its tokens had two live alternatives)."""
    no_spread = np.isnan(values[_UNIT_ENTROPY])
    if not (no_tokens.any() or no_spread.any()):
        return values.tolist()
    rows = values.astype(object)
    for index in _NONE_WITHOUT_TOKENS:
        rows[index, no_tokens] = None
    for index in _NONE_WITHOUT_SPREAD:
        rows[index, no_tokens | no_spread] = None
    return rows.tolist()


def _range_reductions(table: np.ndarray, values: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of each table row over each unit's token range [s, e), and the minimum of `values` there (inf for
    empty ranges); `values` ends with one more inf, for ranges that reach the end.

    `reduceat` over the interleaved bounds s0, e0, s1, e1...: its even results are the ranges (the odd ones,
    between one range's end and the next one's start, are dropped); an empty range yields one element
    there, hence the masks.
    """
    idx = bounds[:, :2].flatten()  # a copy, interleaved: s0, e0, s1, e1...
    np.minimum(idx, len(values) - 1, out=idx)
    sums = np.add.reduceat(table, idx, axis=1)[:, 0::2]
    mins = np.minimum.reduceat(values, idx)[0::2]
    empty = bounds[:, 1] <= bounds[:, 0]
    if empty.any():
        sums[:, empty] = 0.0
        mins[empty] = np.inf
    return sums, mins


def _runs(flags: np.ndarray) -> np.ndarray:
    """(start, end) token index pairs of consecutive True runs: the changes of the 0-padded flags alternate
    between a run's start and its end."""
    padded = np.zeros(len(flags) + 2, dtype=bool)
    padded[1:-1] = flags
    return np.not_equal(padded[1:], padded[:-1]).nonzero()[0].reshape(-1, 2)


def _low_spans(stream: TokenStream, runs: np.ndarray, bounds: np.ndarray, has_low: np.ndarray
               ) -> list[list[tuple[int, int]]]:
    """Per unit, the char ranges (in the stream text, clipped to the unit) of the low runs in its tokens.

    A unit with a low token overlaps the runs from the first that ends after its start to the last that
    starts before its end: one (unit, run) pair per span, all clipped at once."""
    if not has_low.any():
        return [[] for _ in range(len(bounds))]
    first = runs[:, 1].searchsorted(bounds[:, 0], side="right")
    per_unit = runs[:, 0].searchsorted(bounds[:, 1], side="left")
    per_unit -= first
    per_unit *= has_low
    cuts = np.zeros(len(bounds) + 1, dtype=np.int64)
    per_unit.cumsum(out=cuts[1:])
    pair = bounds.repeat(per_unit, axis=0)  # each pair's unit: token_start, token_end, text_start, text_end
    run = runs[(first - cuts[:-1]).repeat(per_unit) + np.arange(cuts[-1])]
    np.maximum(run[:, 0], pair[:, 0], out=run[:, 0])
    np.minimum(run[:, 1], pair[:, 1], out=run[:, 1])
    run[:, 1] -= 1
    starts = np.maximum(stream.starts[run[:, 0]], pair[:, 2])
    ends = np.minimum(stream.ends[run[:, 1]], pair[:, 3])
    keep = ends > starts
    if not keep.all():  # a run clipped to nothing (zero-width tokens at a unit's edge)
        unit = np.repeat(np.arange(len(bounds)), per_unit)[keep]
        starts, ends = starts[keep], ends[keep]
        cuts = np.searchsorted(unit, np.arange(len(bounds) + 1))
    pairs = list(zip(starts.tolist(), ends.tolist(), strict=True))
    # Each unit's spans are one slice of the pairs; most units have none.
    spans: list[list[tuple[int, int]]] = [[] for _ in range(len(bounds))]
    cut_list = cuts.tolist()
    for u in (cuts[1:] > cuts[:-1]).nonzero()[0].tolist():
        spans[u] = pairs[cut_list[u]:cut_list[u + 1]]
    return spans


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
