"""Reading chat-shaped logprobs: the one-pass reader of uniform responses, the general path it falls back to,
token lengths and weights read together, and the argument JSON's leaf spans."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from guardrails.logprobs import read_source
from guardrails.logprobs import weights as weights_module
from guardrails.logprobs.jsonspans import leaves
from guardrails.logprobs.tokens import read_chat
from guardrails.logprobs.weights import token_weight, token_weights

WORDS = [" the", " Paris", " 42", ",", " get_id", "Tok", "yo", " très", "\n", " of", "_", " Zq9"]


def entry(rng: random.Random, token: str, k: int) -> dict[str, Any]:
    logprob = -rng.expovariate(1.0)
    alts = [{"token": rng.choice(WORDS), "logprob": -rng.expovariate(0.5), "bytes": []} for _ in range(k)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alts}


def expected_alternatives(entries: list[dict[str, Any]]) -> list[list[float]]:
    """(n, k) alternatives in plain Python, NaN-padded to the widest row, None read as NaN."""
    width = max((len(e["top_logprobs"]) for e in entries), default=0)
    rows = [[math.nan if a["logprob"] is None else a["logprob"] for a in e["top_logprobs"]] for e in entries]
    return [row + [math.nan] * (width - len(row)) for row in rows]


def assert_read_as_written(entries: list[dict[str, Any]]) -> None:
    stream = read_source("chat", entries)
    assert stream.tokens == tuple(e["token"] for e in entries)
    assert stream.text == "".join(e["token"] for e in entries)
    lengths = [len(e["token"]) for e in entries]
    ends = np.cumsum(lengths).tolist()
    assert stream.ends.tolist() == ends
    assert stream.starts.tolist() == [end - length for end, length in zip(ends, lengths, strict=True)]
    logprobs = [math.nan if e["logprob"] is None else e["logprob"] for e in entries]
    np.testing.assert_array_equal(stream.logprobs, logprobs)
    np.testing.assert_array_equal(stream.alternatives, np.array(expected_alternatives(entries)).reshape(
        len(entries), -1))
    assert stream.weights is not None
    assert stream.weights.tolist() == [token_weight(e["token"]) for e in entries]


@pytest.mark.parametrize("k", [0, 1, 2, 5, 8, 20])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 11])
def test_uniform_responses_read_every_token_and_alternative_in_order(k: int, n: int) -> None:
    # n around the reader's rounds of 4 entries: whole rounds, a remainder, fewer entries than a round.
    rng = random.Random(k * 100 + n)
    assert_read_as_written([entry(rng, rng.choice(WORDS), k) for _ in range(n)])


def test_ragged_alternatives_with_the_usual_total_are_padded_not_shifted() -> None:
    # 4 + 6 alternatives hold as many values as 5 + 5: only each row's own width tells them apart.
    rng = random.Random(1)
    entries = [entry(rng, " a", 5) for _ in range(6)]
    entries[2]["top_logprobs"].pop()
    entries[3]["top_logprobs"].append({"token": " x", "logprob": -7.5, "bytes": []})
    assert_read_as_written(entries)
    stream = read_source("chat", entries)
    assert stream.alternatives.shape == (6, 6)
    assert math.isnan(stream.alternatives[2, 4]) and stream.alternatives[3, 5] == -7.5


def test_null_logprobs_read_as_nan() -> None:
    rng = random.Random(2)
    entries = [entry(rng, " b", 3) for _ in range(5)]
    entries[1]["logprob"] = None
    entries[4]["top_logprobs"][2]["logprob"] = None
    assert_read_as_written(entries)


def test_malformed_alternatives_raise_as_the_general_path_does() -> None:
    rng = random.Random(3)
    missing = [entry(rng, " c", 2) for _ in range(5)]
    del missing[3]["top_logprobs"][1]["logprob"]
    with pytest.raises(KeyError):
        read_source("chat", missing)
    null_list = [entry(rng, " c", 2) for _ in range(5)]
    null_list[4]["top_logprobs"] = None
    with pytest.raises(TypeError):
        read_source("chat", null_list)


def test_streamed_chunks_read_as_one_response() -> None:
    rng = random.Random(4)
    chunks = [[entry(rng, rng.choice(WORDS), 4) for _ in range(size)] for size in (1, 3, 0, 6)]
    joined = read_chat(chunks)
    whole = read_source("chat", [e for chunk in chunks for e in chunk])
    assert joined.tokens == whole.tokens
    np.testing.assert_array_equal(joined.alternatives, whole.alternatives)
    np.testing.assert_array_equal(joined.logprobs, whole.logprobs)


def test_weights_and_lengths_of_unseen_tokens_survive_a_cache_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "_CODES", {})
    monkeypatch.setattr(weights_module, "_MAX_CODES", 3)
    tokens = (" 2024", " get_weather", " Paris", " cloudy", " the", ",", "Ġthe", "▁Name", "x" * 300)
    expected = [2.0, 1.5, 1.5, 1.0, 0.3, 0.5, 0.3, 1.5, 1.0]
    assert token_weights(tokens).tolist() == expected  # more new tokens than the cache holds
    assert token_weights(tokens[:2]).tolist() == expected[:2]  # then a few: kept
    assert len(weights_module._CODES) <= 3
    stream = read_source("chat", [{"token": t, "logprob": -1.0, "bytes": list(t.encode()), "top_logprobs": []}
                                  for t in tokens])
    assert (stream.ends - stream.starts).tolist() == [len(t) for t in tokens]
    assert stream.weights is not None and stream.weights.tolist() == expected


def test_json_leaves_of_plain_members_around_nested_and_escaped_ones() -> None:
    value = {"a": 1, "b": "x", "c": {"d": "e\"f", "g": [True, None, -2.5e3]}, "h": "plain", "i": False, "j": "é"}
    for text in (json.dumps(value), json.dumps(value, indent=2), json.dumps(value, separators=(",", ":")),
                 json.dumps(value, ensure_ascii=False)):
        found = {leaf.path: (text[leaf.start:leaf.end], leaf.value, leaf.is_string) for leaf in leaves(text)}
        escaped = json.dumps("e\"f")[1:-1]
        e_acute = "é" if "é" in text else "\\u00e9"
        assert found == {
            ("a",): ("1", "1", False), ("b",): ("x", "x", True), ("c", "d"): (escaped, 'e"f', True),
            ("c", "g", 0): ("true", True, False), ("c", "g", 1): ("null", None, False),
            ("c", "g", 2): ("-2500.0", "-2500.0", False), ("h",): ("plain", "plain", True),
            ("i",): ("false", False, False), ("j",): (e_acute, "é", True),
        }
    for broken in ('{"a": 1,}', '{"a": 1 "b": 2}', '{"a" 1}', '{"a": 1, "b"}', '{"a": 1}x', '{"a": tru}'):
        assert leaves(broken) == ()
