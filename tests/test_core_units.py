"""Small core pieces: JSON pointers, inline reasoning split, policy loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails.exchange import SegmentKind
from guardrails.pointer import join, resolve, split
from guardrails.policy import PolicyError, load_policy
from guardrails.reasoning import split_reasoning


def test_pointer_escapes_round_trip() -> None:
    doc = {"a/b": {"m~n": [10, 20]}}
    ptr = join("", "a/b", "m~n", 1)
    assert ptr == "/a~1b/m~0n/1"
    assert split(ptr) == ["a/b", "m~n", "1"]
    assert resolve(doc, ptr) == 20
    with pytest.raises(KeyError):
        resolve(doc, "/a~1b/m~0n/2")
    assert resolve(doc, "") is doc


def spans(text: str) -> list[tuple[SegmentKind, str]]:
    return [(kind, text[s:e]) for kind, s, e, _ in split_reasoning(text)]


def test_think_tags_split_reasoning_from_answer() -> None:
    assert spans("<think>plan it</think>\n\nThe answer.") == [
        (SegmentKind.REASONING, "plan it"), (SegmentKind.ASSISTANT, "\n\nThe answer.")]


def test_missing_start_tag_means_prefix_is_reasoning() -> None:
    assert spans("plan it</think>Answer") == [(SegmentKind.REASONING, "plan it"), (SegmentKind.ASSISTANT, "Answer")]


def test_missing_end_tag_means_the_rest_is_reasoning() -> None:
    assert spans("Hi <think>still thinking") == [(SegmentKind.ASSISTANT, "Hi "), (SegmentKind.REASONING,
                                                                                   "still thinking")]


@pytest.mark.parametrize(
    "text",
    [
        "[THINK]x y[/THINK]done",
        "<seed:think>x y</seed:think>done",
        "<|channel>thought\nx y<channel|>done",
        "<|channel|>analysis<|message|>x y<|end|>done",
        "<|START_THINKING|>x y<|END_THINKING|>done",
    ],
)
def test_other_tag_families(text: str) -> None:
    result = spans(text)
    assert result[0][0] is SegmentKind.REASONING and result[0][1].strip().endswith("x y")
    assert result[-1] == (SegmentKind.ASSISTANT, "done")


def test_plain_text_is_one_assistant_span() -> None:
    assert spans("I think it's sunny.") == [(SegmentKind.ASSISTANT, "I think it's sunny.")]


def test_policy_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("colang_version: '2.x'\nrailz:\n  input: {}\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path)
    assert exc.value.line == 2 and "railz" in str(exc.value) and "config.yml" in str(exc.value)


def test_policy_yaml_error_names_line(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("detectors:\n  a: [1,\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path)
    assert exc.value.line is not None


def test_policy_version_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("detectors: {}\n")
    first = load_policy(tmp_path).version
    (tmp_path / "rails.co").write_text("flow x\n")
    assert load_policy(tmp_path).version != first
