"""`recover(text)`: every tool call written as markup in raw model text, whatever the family."""

from __future__ import annotations

from guardrails.toolparse.base import PARSERS, RecoveredCall, Schemas, ToolParser

# Every family's markers contain one of these; text with none of them (most prose) costs four scans.
_QUICK = ("<", "[", '"name"', "'name'")


# Who wins a tie between equally wide markup blocks: specific markup first; the bare-JSON and pythonic
# readers last, because they also read the bodies other families wrap.
PRECEDENCE = (
    "harmony", "kimi_k2", "deepseek_v3", "deepseek_v31", "seed_oss", "qwen3_coder", "glm45", "hermes",
    "granite", "jamba", "internlm", "granite_20b_fc", "gemma4", "functiongemma", "mistral_v11", "mistral_prev11",
    "phi4_mini_json", "llama4_pythonic", "llama3_json", "xlam", "pythonic",
)


def ordered_parsers() -> list[ToolParser]:
    rank = {family: k for k, family in enumerate(PRECEDENCE)}
    return sorted(PARSERS.values(), key=lambda p: rank.get(p.family, len(rank)))


def might_contain_calls(text: str) -> bool:
    return any(q in text for q in _QUICK) or text.rstrip().endswith(")")


def recover(text: str, tools: Schemas | None = None) -> list[RecoveredCall]:
    """All calls found in `text`, in order. `tools` maps declared tool names to their parameter schemas.

    Families overlap (`<tool_call>` opens Hermes JSON, Qwen3-Coder XML, GLM and Granite bodies; a bare
    array may be xLAM or an unwrapped Mistral list), so each parser reports the markup blocks it reads and
    the widest block wins a contested region; on a tie, the family earlier in PRECEDENCE.
    """
    if not text or not might_contain_calls(text):
        return []
    parsers = _ORDERED or _order()
    taken: list[tuple[int, int]] = []
    calls = _resolve(text, [(k, p) for k, p in enumerate(parsers) if not p.bare], tools, taken)
    if taken:  # bare readers must not re-read bodies the others already claimed: blank them out
        masked, pos = [], 0
        for start, end in sorted(taken):
            masked += [text[pos:start], " " * (end - start)]
            pos = end
        text = "".join([*masked, text[pos:]])
    calls += _resolve(text, [(k, p) for k, p in enumerate(parsers) if p.bare], tools, taken)
    return sorted(calls, key=lambda c: c.span)


def _resolve(text: str, parsers: list[tuple[int, ToolParser]], tools: Schemas | None,
             taken: list[tuple[int, int]]) -> list[RecoveredCall]:
    """Run `parsers`; keep the widest non-overlapping blocks (ties: precedence); extend `taken`."""
    groups: dict[tuple[int, tuple[int, int]], list[RecoveredCall]] = {}
    for rank, parser in parsers:
        if parser.applies(text):
            for call in parser.parse(text, tools):
                groups.setdefault((rank, call.block), []).append(call)
    calls: list[RecoveredCall] = []
    for rank, (start, end) in sorted(groups, key=lambda g: (g[1][0] - g[1][1], g[0], g[1][0])):
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue
        taken.append((start, end))
        calls += groups[(rank, (start, end))]
    return calls


_ORDERED: list[ToolParser] = []


def _order() -> list[ToolParser]:
    _ORDERED[:] = ordered_parsers()
    return _ORDERED
