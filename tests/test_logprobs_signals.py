"""Confidence signals: numpy reductions, unsorted alternatives, constrained decoding, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_logprobs_align import two_calls_body

from guardrails.adapters import read_exchange
from guardrails.logprobs import Unit, align_exchange, analyze, read_source, token_weight
from guardrails.logprobs.signals import token_signals, unit_signals


def entry(token: str, logprob: float, alts: list[tuple[str, float]]) -> dict[str, object]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]}


def test_margin_and_entropy_sort_the_alternatives_vllm_leaves_unsorted() -> None:
    body = two_calls_body()
    content = body["response"]["choices"][0]["logprobs"]["content"]
    stream = read_source("chat", content)
    ts = token_signals(stream, constrained=False)
    # Index 5: the sampled " the" (-1.61) had rank 2; the list starts with it, "}" (-0.34) is the best.
    assert ts.margin[5] == pytest.approx(-0.34180229902267456 - -1.6104494333267212)
    values = np.array([a["logprob"] for a in content[5]["top_logprobs"]])
    p = np.exp(values) / np.exp(values).sum()
    assert ts.entropy[5] == pytest.approx(float(-(p * np.log(p)).sum()))
    # Index 11: the sampled token had rank 7; margin is still best minus second best.
    ordered = sorted((a["logprob"] for a in content[11]["top_logprobs"]), reverse=True)
    assert ts.margin[11] == pytest.approx(ordered[0] - ordered[1])


def test_unit_reductions_match_a_plain_python_computation() -> None:
    rng = np.random.default_rng(7)
    words = ["alpha", " beta", " 42", " the", " Paris", ",", " get_id", " of"]
    entries = []
    for i in range(300):
        lp = float(-rng.exponential(1.0))
        alts = [(words[i % 8], lp)] + [(f" w{j}", float(-rng.exponential(2.0))) for j in range(4)]
        entries.append(entry(words[i % 8], lp, alts))
    stream = read_source("chat", entries)
    ts = token_signals(stream, constrained=False)
    ranges = [(0, 300), (10, 11), (50, 120), (299, 300), (7, 7)]
    units = [Unit("segment", None, a, b, 0, 0, 0, 0) for a, b in ranges]  # type: ignore[arg-type]
    threshold = -1.5
    for (a, b), sig in zip(ranges, unit_signals(stream, ts, units, threshold), strict=True):
        lps = [e["logprob"] for e in entries[a:b]]
        if not lps:
            assert sig.tokens == 0 and sig.mean is None
            continue
        weights = [token_weight(e["token"]) for e in entries[a:b]]
        assert sig.tokens == len(lps)
        assert sig.mean == pytest.approx(sum(lps) / len(lps))
        assert sig.min == pytest.approx(min(lps))
        assert sig.perplexity == pytest.approx(math.exp(-sum(lps) / len(lps)))
        assert sig.weighted_mean == pytest.approx(sum(w * v for w, v in zip(weights, lps, strict=True)) / sum(weights))
        low = [w * v < threshold for w, v in zip(weights, lps, strict=True)]
        assert sig.low_share == pytest.approx(sum(low) / len(low))
        assert sig.entropy == pytest.approx(float(np.mean(ts.entropy[a:b])))


def test_weights_favour_digits_identifiers_and_names_over_function_words() -> None:
    assert token_weight(" 2024") > token_weight(" get_weather") >= token_weight(" Paris")
    assert token_weight(" Paris") > token_weight(" cloudy") > token_weight(" the")
    assert token_weight(" the") < token_weight(",") < token_weight(" cloudy")


def test_constrained_decoding_excludes_forced_and_masked_tokens() -> None:
    body = two_calls_body()
    body["request"]["tool_choice"] = "required"
    content = body["response"]["choices"][0]["logprobs"]["content"]
    # Grammar-forced tokens read 0.0 with every other alternative masked; a masked final token reads -9999.
    for i in (27, 28, 29, 30, 40, 43, 46):
        content[i]["logprob"] = 0.0
        content[i]["top_logprobs"] = [{"token": content[i]["token"], "logprob": 0.0, "bytes": content[i]["bytes"]}] + [
            {**alt, "logprob": -9999.0} for alt in content[i]["top_logprobs"][1:]]
    content[72]["logprob"] = -9999.0
    ex = read_exchange(body["request"], body["response"])
    assert ex.constraints.tool_choice_forced
    aligned = align_exchange(ex)
    name = next(r for r in analyze(aligned, True, -2.3).reports if r.unit.kind == "tool_name")
    assert name.signals.forced == 0 and name.signals.tokens == 3  # "get", "_", "weather" were not forced
    first_call = next(r for r in analyze(aligned, True, -2.3).reports if r.unit.label == "tool_call")
    assert first_call.signals.forced == 3  # '":', '",', '":' inside the arguments
    assert first_call.signals.tokens == 12 - 3
    tokyo = [r for r in analyze(aligned, True, -2.3).reports if r.unit.label == "city"][1]
    assert tokyo.signals.masked == 0 and tokyo.signals.min == pytest.approx(-0.021, abs=1e-3)
    last_call = [r for r in analyze(aligned, True, -2.3).reports if r.unit.label == "tool_call"][1]
    assert last_call.signals.masked == 1 and last_call.signals.min > -1.0  # -9999 never becomes a minimum
    # Without constraints the same 0.0 tokens are ordinary, confident tokens.
    unconstrained = next(r for r in analyze(aligned, False, -2.3).reports if r.unit.label == "tool_call")
    assert unconstrained.signals.forced == 0


def test_moments_of_counted_tokens_feed_model_statistics() -> None:
    body = two_calls_body()
    ex = read_exchange(body["request"], body["response"])
    analysis = analyze(align_exchange(ex), False, -2.3)
    content = body["response"]["choices"][0]["logprobs"]["content"]
    covered: set[int] = set()
    for r in analysis.reports:
        covered.update(range(r.unit.token_start, r.unit.token_end))
    # Weighted, the scale the token threshold judges on (and is derived from the statistics in).
    values = [content[i]["logprob"] * token_weight(content[i]["token"]) for i in sorted(covered)]
    assert analysis.tokens.count == len(values)
    assert analysis.tokens.mean == pytest.approx(sum(values) / len(values))


def test_entropy_margin_and_low_spans_match_a_plain_python_computation_on_ragged_masked_alternatives() -> None:
    rng = np.random.default_rng(11)
    words = ["alpha", " beta", " 42", " the", " Paris", ",", " get_id", " of"]
    entries = []
    for i in range(400):
        lp = float(-rng.exponential(1.5))
        alts = [(words[i % 8], lp)] + [(f" w{j}", float(-rng.exponential(2.0))) for j in range(i % 6)]  # k = 1..6
        if i % 7 == 0:
            alts = [(t, -9999.0 if j else v) for j, (t, v) in enumerate(alts)]  # masked alternatives
        entries.append(entry(words[i % 8], lp, alts))
    stream = read_source("chat", entries)
    ts = token_signals(stream, constrained=True)
    for i, e in enumerate(entries):
        live = sorted((a["logprob"] for a in e["top_logprobs"] if a["logprob"] > -9998), reverse=True)
        if len(live) < 2:
            assert math.isnan(ts.entropy[i]) and math.isnan(ts.margin[i])
            assert ts.forced[i] == (e["logprob"] >= -1e-4)
            continue
        p = np.exp(np.array(live) - live[0])
        p /= p.sum()
        assert ts.entropy[i] == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-9)
        assert ts.margin[i] == pytest.approx(live[0] - live[1])
        assert not ts.forced[i]
    ranges = [(0, 400), (3, 40), (100, 101), (250, 399), (5, 5)]
    units = [Unit("segment", None, a, b, int(stream.starts[a]) + 1 if b > a else 0,  # type: ignore[arg-type]
                  int(stream.ends[b - 1]) if b > a else 0, 0, 0) for a, b in ranges]
    threshold = -1.5
    used = ts.used
    for unit, sig in zip(units, unit_signals(stream, ts, units, threshold), strict=True):
        low = [i for i in range(unit.token_start, unit.token_end)
               if used[i] and ts.logprobs[i] * token_weight(entries[i]["token"]) < threshold]
        expected: list[tuple[int, int]] = []
        for i in low:  # runs of consecutive low tokens, as char ranges clipped to the unit's text
            start = max(int(stream.starts[i]), unit.text_start)
            end = min(int(stream.ends[i]), unit.text_end)
            if expected and i - 1 in low:
                expected[-1] = (expected[-1][0], end)
            elif end > start:
                expected.append((start, end))
        assert sig.low_spans == expected


def test_low_runs_at_the_stream_edges_unseen_tokens_and_empty_units() -> None:
    # Unseen token strings take the weight cache's miss path; low runs touch the first and the last token.
    lps = [-5.0, -4.0, -0.01, -0.02, -6.0, -9999.0, -3.0]
    tokens = [f" Zq{i}x" for i in range(len(lps))]
    stream = read_source("chat", [entry(t, v, [(t, v), (" w", v - 1.0)]) for t, v in zip(tokens, lps, strict=True)])
    ts = token_signals(stream, constrained=False)
    assert ts.weights.tolist() == [token_weight(t) for t in tokens]
    n = len(tokens)
    whole = Unit("segment", None, 0, n, 0, len(stream.text), 0, 0)  # type: ignore[arg-type]
    masked_only = Unit("segment", None, 5, 6, int(stream.starts[5]), int(stream.ends[5]), 0, 0)  # type: ignore[arg-type]
    empty = Unit("segment", None, 3, 3, 0, 0, 0, 0)  # type: ignore[arg-type]
    sig, masked, none = unit_signals(stream, ts, [whole, masked_only, empty], -2.3)
    # Token 5 is masked: it never counts, so it is not low either and splits tokens 4 and 6 into two runs.
    s, e = stream.starts.tolist(), stream.ends.tolist()
    assert sig.low_spans == [(0, e[1]), (s[4], e[4]), (s[6], e[6])] and e[6] == len(stream.text)
    assert sig.tokens == n - 1 and sig.masked == 1 and sig.min == -6.0
    assert masked == (0, 0, 1, None, None, None, None, None, None, None, [])
    assert none.tokens == 0 and none.mean is None and none.low_spans == []
