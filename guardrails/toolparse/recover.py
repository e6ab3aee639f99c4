"""`recover(text)`: every tool call written as markup in raw model text, whatever the family."""

from __future__ import annotations

from guardrails.toolparse.base import PARSERS, RecoveredCall, Schemas, ToolParser

# Who wins a tie between equally wide markup blocks: specific markup first; the bare-JSON and pythonic
# readers last, because they also read the bodies other families wrap.
PRECEDENCE = (
    "harmony", "kimi_k2", "deepseek_v3", "deepseek_v31", "seed_oss", "qwen3_coder", "glm45", "hermes",
    "granite", "jamba", "internlm", "granite_20b_fc", "gemma4", "functiongemma", "mistral_v11",
    "mistral_prev11", "phi4_mini_json", "llama4_pythonic", "llama3_json", "xlam", "pythonic",
)
# Every family's markers contain one of these; text with none of them (most prose) costs four scans.
_QUICK = ("<", "[", '"name"', "'name'")


class _Index:
    """Parsers in precedence order, and which markers wake which parsers (each marker is looked for once)."""

    def __init__(self) -> None:
        rank = {family: k for k, family in enumerate(PRECEDENCE)}
        self.parsers = sorted(PARSERS.values(), key=lambda p: rank.get(p.family, len(rank)))
        woken: dict[str, list[int]] = {}
        self.custom: list[int] = []  # parsers with their own `applies`
        for k, parser in enumerate(self.parsers):
            if type(parser).applies is not ToolParser.applies:
                self.custom.append(k)
                continue
            for marker in parser.markers:
                woken.setdefault(marker, []).append(k)
        self.markers = list(woken.items())

    def active(self, text: str) -> list[int]:
        found: set[int] = set()
        for marker, ranks in self.markers:
            if marker in text:
                found.update(ranks)
        found.update(k for k in self.custom if self.parsers[k].applies(text))
        return sorted(found)


_INDEX: list[_Index] = []


def might_contain_calls(text: str) -> bool:
    return any(q in text for q in _QUICK) or text.rstrip().endswith(")")


def recover(text: str, tools: Schemas | None = None) -> list[RecoveredCall]:
    """All calls found in `text`, in order. `tools` maps declared tool names to their parameter schemas.

    Families overlap (`<tool_call>` opens Hermes JSON, Qwen3-Coder XML, GLM and Granite bodies; a bare
    array may be xLAM or an unwrapped Mistral list), so each parser reports the markup blocks it reads and
    the widest block wins a contested region; on a tie, the family earlier in PRECEDENCE. Bare readers
    run last, on the text with the blocks already claimed blanked out.
    """
    if not text or not might_contain_calls(text):
        return []
    index = _INDEX[0] if _INDEX else _build_index()
    active = index.active(text)
    if not active:
        return []
    parsers = index.parsers
    taken: list[tuple[int, int]] = []
    calls = _resolve(text, [(k, parsers[k]) for k in active if not parsers[k].bare], tools, taken)
    for k in active:  # bare readers, one by one, never re-read the bodies already claimed
        if parsers[k].bare:
            found = _resolve(_blank(text, taken) if taken else text, [(k, parsers[k])], tools, taken)
            calls += found
    calls.sort(key=lambda c: c.span)
    return calls


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with `spans` replaced by spaces (offsets unchanged)."""
    parts, pos = [], 0
    for start, end in sorted(spans):
        if start >= pos:
            parts += [text[pos:start], " " * (end - start)]
            pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _resolve(text: str, parsers: list[tuple[int, ToolParser]], tools: Schemas | None,
             taken: list[tuple[int, int]]) -> list[RecoveredCall]:
    """Run `parsers`; keep the widest non-overlapping blocks (ties: precedence); extend `taken`."""
    groups: dict[tuple[int, tuple[int, int]], list[RecoveredCall]] = {}
    for rank, parser in parsers:
        for call in parser.parse(text, tools):
            groups.setdefault((rank, call.block), []).append(call)
    if len(groups) == 1 and not taken:
        (key, calls), = groups.items()
        taken.append(key[1])
        return calls
    calls = []
    for rank, (start, end) in sorted(groups, key=lambda g: (g[1][0] - g[1][1], g[0], g[1][0])):
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue
        taken.append((start, end))
        calls += groups[(rank, (start, end))]
    return calls


def _build_index() -> _Index:
    _INDEX.append(_Index())
    return _INDEX[0]
