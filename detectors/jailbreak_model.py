"""The learned cue of `jailbreak`: a logistic regression over the word unigrams and bigrams of a message.

The weights are a small vocabulary of n-grams in detectors/data/jailbreak_ngrams.json, written by
bench/train_jailbreak_model.py (its docstring and the file's header name the data and their licenses). Scoring
is one regex pass and a set of dictionary look-ups over at most `max_tokens` words, so a typical prompt costs
tens of microseconds and nothing is downloaded.

An agent framework's prompt (LangChain, LlamaIndex, CrewAI, InjecAgent...) is read without its scaffolding: the
lines of its ReAct format and worked examples, and its tool listings (`scaffolding`). They are the framework's words,
not the user's, and left in they weigh as a message that tells the model how to behave; left out, they can neither
push an ordinary agent step towards "jailbreak" nor, appended to a jailbreak, pull it away.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise, repeat
from pathlib import Path

from guardrails.toolparse.react import prompt_tools

MODEL_FILE = Path(__file__).parent / "data" / "jailbreak_ngrams.json"
_WORD = re.compile(r"[a-z0-9][a-z0-9']*")
CHARS_PER_TOKEN = 12  # only this many characters per counted word are lowered and split


# A line of a ReAct format, of a worked example or of a tool's entry (`Thought: ...`, `Action Input: ...`,
# LlamaIndex's `> Tool Name: ...`, CrewAI's `Tool Arguments: ...`). Of the user's question (ReAct's `Question:`,
# InjecAgent's `User Input:`, CrewAI's `Current Task:`) only the label: the words are the user's.
_AGENT_LINE = re.compile(r"^[ \t>*#-]*(?:\*\*)?(?:(Question|User[ \t]+Input|Current[ \t]+Task)|Thought|"
                         r"Action(?:[ \t]+Input)?|Observation|Final[ \t]+Answer|Answer|"
                         r"Tool[ \t]+(?:Name|Description|Args|Arguments))(?:\*\*)?[ \t]*:[^\n]*", re.MULTILINE)
_QUESTION_WORDS = ("Question", "User Input", "Current Task")
# A line of the format that names its steps: "... (this Thought/Action/Action Input/Observation can repeat N times)".
_STEPS_LINE = re.compile(r"^[^\n]*\b(?:Thought|Action|Observation)/(?:Thought|Action|Observation)\b[^\n]*",
                         re.MULTILINE)
# The step labels that make a text an agent's format: two of them at the start of lines (one `Answer:` line is a
# quiz's, and a scripted `Question:`/`Answer:` dialogue is no agent's).
_STEP_LABEL = re.compile(r"^[ \t>*#-]*(?:\*\*)?(Thought|Action|Observation|Final[ \t]+Answer)\b", re.MULTILINE)
_STEP_WORDS = ("Thought", "Action", "Observation", "Final Answer")


def _react_format(text: str) -> bool:
    return sum(word in text for word in _STEP_WORDS) >= 2 and len({m.group(1) for m in _STEP_LABEL.finditer(text)}) >= 2


def scaffolding(text: str) -> list[tuple[int, int]]:
    """The [start, end) spans of an agent framework's scaffolding in `text`: its ReAct lines (of a question, the
    label) and its tool listings; no ReAct lines unless the text holds a ReAct format (two step labels)."""
    spans = [tool.span for tool in prompt_tools(text)]
    if _react_format(text):
        spans += [(m.start(), m.end(1) if m.group(1) else m.end()) for m in _AGENT_LINE.finditer(text)]
        spans += [m.span() for m in _STEPS_LINE.finditer(text)]
    return spans


def questions(text: str, max_tokens: int) -> list[str]:
    """The user's questions in an agent framework's prompt (in the first `max_tokens` words' characters): each from
    its label to the next ReAct line. None unless the text holds a ReAct format."""
    window = text[: max_tokens * CHARS_PER_TOKEN]
    if not any(map(window.__contains__, _QUESTION_WORDS)) or not _react_format(window):
        return []
    lines = list(_AGENT_LINE.finditer(window))
    # a label opening its line: a bulleted "- User Input: the instruction..." describes the prompt's fields
    return [window[window.index(":", line.end(1)) + 1 : following.start() if following else len(window)]
            for line, following in zip(lines, [*lines[1:], None], strict=True)
            if line.group(1) and not window[line.start() : line.start(1)].strip(" \t*")]


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    kept, at = [], 0
    for start, end in sorted(spans):
        kept.append(text[at:start])
        at = max(at, end)
    kept.append(text[at:])
    return "\n".join(kept)


def ngrams(text: str, max_tokens: int) -> set[str]:
    """The distinct lower-cased words and word pairs of the first `max_tokens` words, agent scaffolding left out."""
    window = text[: max_tokens * CHARS_PER_TOKEN]
    if spans := scaffolding(window):
        window = _without(window, spans)
    words = _WORD.findall(window.lower())[:max_tokens]
    return {*words, *map(" ".join, pairwise(words))}


@dataclass(frozen=True, slots=True)
class NgramModel:
    weights: dict[str, float]
    bias: float
    max_tokens: int

    def logit(self, grams: set[str]) -> float:
        # presence features scaled by 1/sqrt(n): long prompts do not win by length alone
        total = sum(map(self.weights.get, grams, repeat(0.0)))  # map: the look-ups stay in C
        return self.bias + total / math.sqrt(max(1, len(grams)))

    def grams(self, text: str) -> set[str]:
        """The n-grams of `text` this model reads: computed once, then passed to `probability` and `strongest_of`."""
        return ngrams(text, self.max_tokens)

    def question_grams(self, text: str) -> list[set[str]]:
        """The n-grams of each user's question in an agent framework's prompt (`questions`)."""
        return [ngrams(question, self.max_tokens) for question in questions(text, self.max_tokens)]

    def probability(self, grams: set[str]) -> float:
        """The probability that the text of these n-grams is a jailbreak prompt."""
        return 1.0 / (1.0 + math.exp(-self.logit(grams)))

    def score(self, text: str) -> tuple[float, int]:
        """(probability that `text` is a jailbreak prompt, how many distinct n-grams that rests on)."""
        grams = self.grams(text)
        return self.probability(grams), len(grams)

    def strongest(self, text: str, top: int = 5) -> list[str]:
        """The n-grams of `text` that push hardest towards "jailbreak" (evidence for a finding)."""
        return self.strongest_of(self.grams(text), top)

    def strongest_of(self, grams: set[str], top: int = 5) -> list[str]:
        """`strongest` for n-grams already computed."""
        weights = self.weights
        present = [(weights[g], g) for g in grams & weights.keys() if weights[g] > 0]  # sorted below: order-free
        return [g for _, g in sorted(present, reverse=True)[:top]]


@lru_cache(maxsize=4)
def load(path: Path = MODEL_FILE) -> NgramModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    return NgramModel(weights=dict(data["weights"]), bias=float(data["bias"]), max_tokens=int(data["max_tokens"]))
