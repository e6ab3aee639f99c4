"""Reading chat-shaped logprobs: the C reader of uniform responses, the general path it falls back to,
token lengths and weights read together, and the argument JSON's leaf spans."""

from __future__ import annotations

import json
import math
import random
import shutil
import sysconfig
from typing import Any

import numpy as np
import pytest

from guardrails.logprobs import read_source
from guardrails.logprobs import tokens as tokens_module
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


def test_the_c_reader_is_built_where_a_compiler_is() -> None:
    # setup.py marks the extension optional so that an install without a compiler still works; where one is
    # at hand (CI, the README's machines) a missing module means the build broke and every read is slower.
    if shutil.which(sysconfig.get_config_var("CC").split()[0]) is None:
        pytest.skip("no C compiler on this machine: the logprob reader runs its pure-Python general path")
    assert tokens_module.read_uniform is not None


@pytest.mark.parametrize("k", [0, 1, 5, 20, 70])
def test_the_c_reader_and_the_general_path_agree(k: int) -> None:
    rng = random.Random(k)
    entries = [entry(rng, rng.choice(WORDS), k) for _ in range(37)]
    entries[5]["logprob"] = -9999  # an int, as a server that drops ".0" would send it
    if k:
        entries[6]["top_logprobs"][0]["logprob"] = 0
    first = entries[0]
    fast = tokens_module._read_uniform(entries, first)
    assert fast is not None or tokens_module.read_uniform is None
    if fast is None:
        pytest.skip("the C reader is not built on this machine")
    general = tokens_module._read_by_field(entries, first)
    assert fast[0] == general[0]
    np.testing.assert_array_equal(fast[1], general[1])
    np.testing.assert_array_equal(fast[2], general[2])
    assert fast[1][5] == -9999.0 and fast[2].shape == (37, k)


def test_keys_of_their_own_and_in_any_order_read_the_same() -> None:
    # The C reader matches the parsed body's shared key strings by identity and looks up any other key: entries
    # whose keys are fresh strings, in another order, with extra fields, must read as the general path reads them.
    rng = random.Random(12)

    def fresh(key: str) -> str:
        return "".join(list(key))  # equal, not identical

    entries: list[dict[str, Any]] = []
    for i in range(30):
        plain = entry(rng, rng.choice(WORDS), 4)
        if i % 3 == 0:
            plain = {fresh(key): value for key, value in reversed(list(plain.items()))}
            plain[fresh("top_logprobs")] = [{fresh(k): v for k, v in alt.items()} for alt in plain["top_logprobs"]]
        if i % 5 == 0:
            plain = {"extra": i, **plain}
        entries.append(plain)
    if tokens_module.read_uniform is None:
        pytest.skip("the C reader is not built on this machine")
    first = entries[1]
    fast = tokens_module._read_uniform(entries, first)
    assert fast is not None  # this shape is the usual one: the C reader must take it
    general = tokens_module._read_by_field(entries, first)
    assert fast[0] == general[0]
    np.testing.assert_array_equal(fast[1], general[1])
    np.testing.assert_array_equal(fast[2], general[2])


def test_without_the_extension_every_response_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    entries = [entry(rng, rng.choice(WORDS), 5) for _ in range(50)]
    built = read_source("chat", entries)
    monkeypatch.setattr(tokens_module, "read_uniform", None)  # as installed without a C compiler
    assert_read_as_written(entries)
    fallback = read_source("chat", entries)
    assert (fallback.text, fallback.tokens) == (built.text, built.tokens)
    for field in ("starts", "ends", "logprobs", "alternatives", "weights"):
        np.testing.assert_array_equal(getattr(fallback, field), getattr(built, field))


class Entry(dict):  # type: ignore[type-arg]
    """A dict subclass: its lookups may run Python code, so the C reader leaves it to the general path."""


@pytest.mark.parametrize("damage", ["short_top", "long_top", "null_logprob", "string_logprob", "bool_logprob",
                                    "huge_int", "missing_token", "missing_alt_logprob", "top_is_dict",
                                    "entry_subclass", "alt_subclass", "entry_not_dict", "top_generator"])
def test_the_c_reader_declines_every_unusual_shape(damage: str) -> None:
    rng = random.Random(9)
    entries: list[Any] = [entry(rng, rng.choice(WORDS), 3) for _ in range(6)]
    target = entries[4]
    if damage == "short_top":
        target["top_logprobs"].pop()
    elif damage == "long_top":
        target["top_logprobs"].append({"token": "x", "logprob": -1.0})
    elif damage == "null_logprob":
        target["logprob"] = None
    elif damage == "string_logprob":
        target["logprob"] = "-1.0"
    elif damage == "bool_logprob":
        target["top_logprobs"][1]["logprob"] = True
    elif damage == "huge_int":
        target["logprob"] = -(10**400)
    elif damage == "missing_token":
        del target["token"]
    elif damage == "missing_alt_logprob":
        del target["top_logprobs"][2]["logprob"]
    elif damage == "top_is_dict":
        target["top_logprobs"] = {"a": -1.0, "b": -2.0, "c": -3.0}
    elif damage == "entry_subclass":
        entries[4] = Entry(target)
    elif damage == "alt_subclass":
        target["top_logprobs"][0] = Entry(target["top_logprobs"][0])
    elif damage == "entry_not_dict":
        entries[4] = [("token", " x")]
    elif damage == "top_generator":
        target["top_logprobs"] = (alt for alt in target["top_logprobs"])
    assert tokens_module._read_uniform(entries, entries[0]) is None


def test_a_key_that_changes_the_list_while_compared_is_read_safely() -> None:
    # A dict key whose __eq__ runs Python code (only a Python caller can build one) empties the list being read.
    entries: list[Any] = []
    armed = False

    class Key(str):
        def __hash__(self) -> int:
            return hash("token")

        def __eq__(self, other: object) -> bool:
            if armed:
                entries.clear()
            return False

    rng = random.Random(5)
    entries.extend(entry(rng, " a", 2) for _ in range(4))
    entries[1] = {Key("other"): 1, **entries[1]}
    if tokens_module.read_uniform is None:
        pytest.skip("the C reader is not built on this machine")
    armed = True
    # A key string of its own (not the entries' "token"): the reader then looks it up by hash, which compares.
    token_key = "".join(["tok", "en"])
    assert tokens_module.read_uniform(entries, token_key, "logprob", "top_logprobs", "logprob", 2) is None


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
    null_list[4]["top_logprobs"] = None  # no alternatives, not malformed (tests/test_logprobs_malformed.py)
    assert np.isnan(read_source("chat", null_list).alternatives[4]).all()


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
