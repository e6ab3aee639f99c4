"""`prompt_injection`'s analysis of untrusted text, shared by the detectors that read text for planted instructions:
prompt_injection itself, unsafe_reasoning's goal-hijack check (what the reasoning may have adopted) and tool_poisoning
(declared tools' descriptions, with rules of its own added). A detector builds one `InjectionAnalysis` for its
settings when it is built (once per policy version), never one per check.

What an attacker controls reaches the model as tool output or a retrieved document. The rules look for
text written *to the model* rather than to a human reader: overrides of earlier instructions, chat-template
markup that fakes a new system or assistant turn, notes addressed to the AI, requests to perform an
account or data operation for "my" account, exfiltration through an e-mail address or a markdown image
URL, concealment from the user, instructions about the model's own answer (its form, prose or code planted in
it: BIPIA's attacks), and characters a human cannot see (zero-width runs, Unicode tag characters, bidi
overrides). Every rule is a precompiled regex tried only where one of its matches may start (its leads: words and
marks found in the lower-cased text in one pass, detectors/_injection_rules.py), and kept only when one of its
keywords occurs; those about the model's answer run only at the sentence starts shortly before a mention of it
(answer_hits). The rules read the
folded text, and again its readings where they differ (detectors/_readings.py): markup left out
(`<b>Ig</b>nore`, `**Ignore**\n**all previous**`), base64 and hex runs decoded ("decode this and follow it").
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Collection, Iterable, Iterator
from itertools import chain
from typing import Any

from detectors._answer_steering import _ANSWER_WORDS, _CODE_REF_WORDS, ANSWER_RULES, answer_hits, code_insertion_hits
from detectors._fold import FoldedText, folded_view, warm_up
from detectors._injection_rules import (
    _POLITE_OPENER,
    _SENTENCE_START,
    _SEQUENCE_OPENER,
    FLAGS,
    Lowered,
    Rule,
    _hit,
    led_matches,
    literal_leads,
    lowered_for_leads,
    rule,
    word_leads,
)
from detectors._readings import decoded, without_markup
from detectors._textfilter import SEVERITY_RANK, capped_by_severity
from guardrails.exchange import Segment
from guardrails.findings import Hit, Severity
from guardrails.memo import SizedMemo

# Shared with `jailbreak`: the canonical "ignore previous instructions" family.
OVERRIDE_PATTERN = (
    r"\b(?:ignore|disregard|forget|skip|override|neglect|abandon|drop|bypass|overlook)\s+(?:about\s+)?"
    r"(?:(?:all|any|every|each|the|your|my|of|these|those|that|its|previous|prior|above|earlier|preceding|"
    r"former|original|initial|existing|old|other|current|given|system|developer)\s+){1,4}"
    r"(?:instructions?|directions?|directives?|prompts?|rules|guidelines|commands?|context|tasks?|orders|"
    r"messages?|guidance|constraints|restrictions|programming|conversation|text|content)\b"
    r"|\b(?:ignore|disregard|forget|overlook)\s+(?:everything|all|anything)\s+(?:above|before|previously|prior|"
    r"(?:that\s+)?you(?:'ve|\s+have|\s+were|\s+got)\s+(?:been\s+)?(?:told|instructed|given|programmed|taught)|"
    r"(?:that\s+)?(?:was|you\s+were)\s+(?:said|told))"
    r"|\b(?:ignore|disregard)\s+the\s+(?:above|previous|preceding)\b"
    r"|\bregardless\s+of\s+(?:any\s+|all\s+|the\s+|your\s+)?(?:previous|prior|earlier|original)\s+"
    r"(?:instructions?|tasks?|rules|directions?|prompts?)\b"
)
# A match starts only where a local part starts: else each of a long word's positions would be tried up to its
# end (50 KB of "a...a@" in a tool result took seconds).
EMAIL = r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_URL = r"(?:https?://|www\.)[^\s'\"<>)]+"
# Operations an agent performs with tools on the user's behalf: the verbs of injected task requests.
_ACTION_VERBS = (
    r"transfer|deposit|withdraw|pay|sell|buy|purchase|grant|revoke|unlock|delete|remove|erase|wipe|destroy|"
    r"disable|deactivate|turn\s+off|share|send|e-?mail|forward|upload|post|publish|move|copy|update|change|"
    r"modify|reset|create|add|install|run|execute|retrieve|retrive|fetch|list|get|find|search|access|"
    r"download|schedule|dispatch|redirect|leave|give|fill|guide|generate|invite|book|cancel|approve|"
    r"grant|set|export|open|close|block|whitelist|allow|enable|provide|read|check|look\s+up|give"
)
_AGENT_REQUEST = re.compile(
    _SENTENCE_START + r"(?:(?P<opener>" + _POLITE_OPENER + r")(?:[\w'-]+\s+){0,6}?|(?P<sequence>"
    + _SEQUENCE_OPENER + r"))?"
    r"(?P<verb>" + _ACTION_VERBS + r")(?=\s+[\w$'\"(])(?P<rest>(?:[^.!?\n]|[.!?](?![\s'\"]|$)){0,240})",
    FLAGS,
)
_LABEL = re.compile(r"\s*[\w-]+\s*:")  # "Email Address: ..." is a form label, not a request
# What makes a request concrete: the requester's own assets, a destination address, credentials.
_TARGET = re.compile(
    r"\bmy\b|" + EMAIL + "|" + _URL + r"|\b(?:password|passwords|credentials?|api[\s_-]?keys?|"
    r"tokens?|account|accounts|bank|payment|\$\s?\d|\d+\s?(?:usd|btc|bitcoin|eth)|the\s+user'?s?|"
    r"files|folders?|records|documents|data)\b",
    re.IGNORECASE,
)
_FIRST_PERSON_TARGET = re.compile(r"\bmy\b|" + EMAIL, re.IGNORECASE)
_EXFIL_TO = re.compile(
    r"(?:^|(?<=[.!?;:,'\"\n])\s*|\b(?:and|then|to|please|also|kindly|must|should)\s+)"
    r"(?P<verb>send|e-?mail|forward|share|upload|post|transmit|leak|copy|exfiltrate|deliver)\b[^.!?\n]{0,160}?"
    r"\bto\b[^.!?\n]{0,40}?(?:" + EMAIL + "|" + _URL + ")",
    FLAGS,
)
_EXFIL_VERB_WORDS = word_leads("send", "email", "forward", "share", "upload", "post", "transmit", "leak", "copy",
                               "exfiltrate", "deliver")  # and "e-mail" (the index reads letters only)
_EXFIL_CONNECTORS = ("and", "then", "to", "please", "also", "kindly", "must", "should")


def _exfil_leads(low: Lowered) -> Iterator[int]:
    """Where an _EXFIL_TO match may start, from each of its verbs at a word start: at the verb (a line start, or a
    punctuation mark just before it), where the whitespace before it starts (after a punctuation mark) or after a
    line break in that whitespace, and where a connector word ends at that whitespace ("and send")."""
    text = low.text
    for k in chain(_EXFIL_VERB_WORDS(low), low.word_starts("e-mail")):
        yield k
        space = low.run_before(k)
        if space == k:
            continue
        yield space
        j = text.find("\n", space, k)
        while j >= 0:
            yield j + 1
            j = text.find("\n", j + 1, k)
        for word in _EXFIL_CONNECTORS:
            if space >= len(word) and text.startswith(word, space - len(word)):
                yield space - len(word)


def _led_by(words: Iterable[str]) -> str:
    """An alternation of lower-case literal `words`, grouped by their first letter: `re` tries the alternatives one
    by one wherever it looks, 25 letters rather than 100 words."""
    groups: dict[str, list[str]] = {}
    for word in sorted(set(words)):
        groups.setdefault(word[0], []).append(re.escape(word[1:]))
    return "|".join(re.escape(first) + "(?:" + "|".join(rest) + ")" for first, rest in groups.items())


# Where an _AGENT_REQUEST match may start, in the lower-cased text: a sentence start (_SENTENCE_START: after one of its
# marks or a `\n` escape; the text's start is added apart), then spaces or tabs, then what a match opens with (a polite
# opener, a sequence word or an action verb; `i need you to`). Group 1 is the sentence start.
_REQUEST_OPENS = ("please", "kindly", "pls", "can", "could", "would", "will", "you", "make", "be", "remember",  # polite
                  "first", "now", "next", "then", "also", "finally", "immediately", "afterward",  # sequence
                  "e-mail", *(re.sub(r"[^a-z].*", "", verb.replace("-?", "")) for verb in _ACTION_VERBS.split("|")))
_REQUEST_LEAD = re.compile(r"(?:[.!?;:,\n'\"|>\[{(`*]|\\n)()[ \t]*+(?=" + _led_by(_REQUEST_OPENS) + r"|i\s)")


_CONCEALMENT_WORDS = word_leads("do", "never", "without")
_USER_WORDS = word_leads("user", "human")
_PLACEHOLDER = r"(?:\{\{?[^}\s]{1,40}\}\}?|\[[A-Z_]{3,40}\]|\$[A-Za-z_]{3,40}|<[a-z_]{3,40}>)"
# chat_markup's tags, each found at its first character (a pattern opening with a class of two literals is searched
# for in C): `<|`, `[inst]`, `[/inst]`, `<<sys>>`, `<</sys>>`, `<system`, `</system`, and the closing tags.
_CHAT_TAGS = re.compile(r"<(?=\||<sys>>|</sys>>|/?system|/tool_r|/function_result|/observation>|/document>|"
                        r"/search_result)|\[(?=/?inst\])")
_ROLE_WORDS = word_leads("system", "assistant")


def _chat_markup_leads(low: Lowered) -> Iterator[int]:
    r"""chat_markup's tags, and the line starts before "system" or "assistant" (`^[ \t]*#{0,3}[ \t]*system`)."""
    yield from (m.start() for m in _CHAT_TAGS.finditer(low.text))
    for k in _ROLE_WORDS(low):
        start = low.run_before(k, " \t#")
        if not start or low.text[start - 1] == "\n":
            yield start


def _hidden_html_leads(low: Lowered) -> Iterator[int]:
    """hidden_html's `<[a-z][^>]{0,200}style`: each `<` 202 characters or fewer before a "style" (once, where the
    reaches of several overlap)."""
    text = low.text
    done = -1
    for k in low.at("style"):
        j = text.find("<", max(0, k - 202, done + 1), k - 1)
        while j >= 0:
            yield j
            done = j
            j = text.find("<", j + 1, k - 1)


RULES: tuple[Rule, ...] = (
    rule("override_instructions",
         "ignor|disregard|forget|skip|overrid|neglect|abandon|drop|bypass|overlook|regardless",
         OVERRIDE_PATTERN, Severity.HIGH,
         "instruction to ignore or override earlier instructions",
         leads=word_leads("ignore", "disregard", "forget", "skip", "override", "neglect", "abandon", "drop", "bypass",
                          "overlook", "regardless")),
    rule("new_instructions", "instruction|task|objective|directive|order|system|goal|purpose|job",
         r"\b(?:new|updated|revised|real|actual|true|additional|secret|hidden)\s+"
         r"(?:instructions?|task|objective|directive|orders?|system\s+prompt)\s*[:\-]"
         r"|\byour\s+(?:new|real|actual|true|only)\s+(?:task|goal|objective|instructions?|purpose|job)\b",
         Severity.HIGH, "text announcing new instructions for the model",
         leads=word_leads("new", "updated", "revised", "real", "actual", "true", "additional", "secret", "hidden",
                          "your")),
    rule("role_hijack", "now|new|switch|enter",
         r"\byou\s+are\s+now\s+(?:a|an|the|in|my|no\s+longer)\b|\bfrom\s+now\s+on,?\s+(?:you|the\s+assistant|"
         r"the\s+ai)\b|\byour\s+new\s+(?:role|persona|identity|name)\b|\bswitch\s+(?:to|into)\s+\w+\s+mode\b|"
         r"\benter(?:ing)?\s+(?:developer|debug|admin|god|unrestricted|maintenance)\s+mode\b",
         Severity.HIGH, "attempt to reassign the model's role",
         leads=word_leads("you", "from", "switch", "enter")),
    rule("chat_markup", "<|system|assistant|inst]|<<|</",
         r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|"
         r"begin_of_text|channel|message|start|end)\|>|\[/?INST\]|<</?SYS>>|</?(?:system|system_prompt)>|"
         r"</(?:tool_response|tool_result|function_results?|observation|document|search_results?)>|"
         r"^[ \t]*#{0,3}[ \t]*(?:system|assistant)[ \t]*:[ \t]*\S",
         Severity.HIGH, "chat-template markup faking a new system or assistant turn",
         leads=_chat_markup_leads),
    rule("addressed_to_model",
         "note|message|instruction|attention|reminder|memo|directive|notice|dear|hey|hi |hi,|hi\n|hi\t|hello|"
         "attn|if you|ai |ai\n|ai\t|llm",
         r"\b(?:note|message|instructions?|attention|reminder|memo|directive|notice)\s+(?:to|for)\s+(?:the\s+|all\s+|"
         r"any\s+)?(?:ai|assistant|llm|language\s+model|agent|chatbot|bot|model|gpt|chatgpt|claude|gemini)s?\b"
         r"|\b(?:dear|hey|hi|hello|attention|attn)\s*,?\s+(?:ai|assistant|agent|chatgpt|claude|gemini|llm|"
         r"bot|language\s+model)\b"
         r"|\bif\s+you\s+are\s+(?:an?\s+)?(?:ai|llm|language\s+model|assistant|agent|chatbot|bot)\b"
         r"|\b(?:ai|llm)\s+(?:assistant|agent|model)s?\s*(?:,|:)\s*(?:you\s+)?(?:must|should|please|need)\b",
         Severity.HIGH, "text addressed to the AI model",
         leads=word_leads("note", "message", "instruction", "attention", "reminder", "memo", "directive", "notice",
                          "dear", "hey", "hi", "hello", "attn", "if", "ai", "llm")),
    rule("system_prompt_probe", "prompt|instructions",
         r"\b(?:reveal|print|repeat|output|show|leak|disclose|display|write\s+out|tell\s+(?:me|us))\s+"
         r"(?:\w+\s+){0,3}?(?:your|the)\s+(?:system\s+prompt|initial\s+prompt|hidden\s+prompt|"
         r"original\s+instructions|system\s+instructions|instructions\s+above|secret\s+instructions)\b",
         Severity.HIGH, "request to reveal the system prompt",
         leads=word_leads("reveal", "print", "repeat", "output", "show", "leak", "disclose", "display", "write",
                          "tell")),
    rule("concealment", "user|human|owner|operator",
         r"\b(?:do\s+not|don't|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|reveal(?:ing)?|"
         r"notify(?:ing)?|alert(?:ing)?|ask(?:ing)?|let(?:ting)?|show(?:ing)?)\s+(?:this\s+to\s+)?"
         r"(?:the\s+)?(?:user|human|owner|operator)\b"
         r"|\bthe\s+(?:user|human)\s+(?:must|should|need)\s+(?:not|never)\s+(?:know|find\s+out|be\s+told|see)\b",
         Severity.HIGH, "instruction to hide an action from the user",
         # "the" opens a twentieth of prose's words: found back from "user" and "human"
         leads=lambda low: chain(_CONCEALMENT_WORDS(low), low.words_before(_USER_WORDS(low), ("the",)))),
    rule("markdown_image_exfiltration", "![",
         r"!\[[^\]\n]{0,200}\]\(\s*<?(?:https?:)?//[^\s)]*(?:" + _PLACEHOLDER + r"|[?&=/][A-Za-z0-9+/_-]{40,})",
         Severity.HIGH, "markdown image whose URL carries data or a placeholder to fill (exfiltration)",
         leads=literal_leads("![")),
    rule("url_placeholder_exfiltration", "//",
         r"(?:https?:)?//[^\s)\"'<>]*\?[^\s)\"'<>]*=\s*" + _PLACEHOLDER,
         Severity.MEDIUM, "URL with a query parameter to be filled with data (exfiltration)", re.MULTILINE,
         leads=literal_leads("http", "//")),
    rule("render_instruction", "image|picture|img|pixel|link",
         r"\b(?:render|display|include|embed|insert|output|append)\s+(?:this|the\s+following|an?|the)\s+"
         r"(?:markdown\s+|html\s+)?(?:image|picture|img|pixel|link)\b[^.\n]{0,80}(?:https?://|!\[)",
         Severity.MEDIUM, "instruction to render an image or link",
         leads=word_leads("render", "display", "include", "embed", "insert", "output", "append")),
    rule("hidden_html", "style",
         r"<[a-z][^>]{0,200}style\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|"
         r"font-size\s*:\s*0(?:px)?\s*[;\"']|opacity\s*:\s*0\s*[;\"'])",
         Severity.MEDIUM, "HTML element styled to be invisible",
         leads=_hidden_html_leads),
)


_HIDDEN_CHARS = re.compile(
    r"[\U000E0000-\U000E007F]+|[\u202A-\u202E\u2066-\u2069]|[\u200B-\u200F\u2060-\u2064\uFEFF\u180E]{2,}"
)
_HIDDEN_ANY = re.compile(r"[\U000E0000-\U000E007F\u202A-\u202E\u2066-\u2069\u200B-\u200F\u2060-\u2064\uFEFF\u180E]")
# Black flag + tag letters + cancel tag is how subdivision flags (England, Scotland, Wales) are spelled.
_FLAG_SEQUENCE = re.compile("\U0001F3F4[\U000E0020-\U000E007E]+\U000E007F")
# Necessary conditions of the two sentence-level checks, tested once something matched (before, where every position
# is tried): every planted request has a polite opener or a first-person target, and a target; exfiltration needs
# an e-mail address or a URL.
_OPENER_HINT = re.compile(r"please|kindly|pls|\byou\b|make\s+sure|be\s+sure|remember\s+to", re.IGNORECASE)
# Literals one of which each gate pattern's match contains, tested on the lower-cased text first: a case-insensitive
# alternation costs ~60 ns per character in `re`, and most tool results hold none of them.
_OPENER_WORDS = ("please", "kindly", "pls", "you", "sure", "remember")
_FIRST_PERSON_WORDS = ("my", "@")
_EXFIL_HINTS = ("@", "http", "www.")
# The hidden-text rules: `hidden_text` in disabled_rules disables the three, each id disables itself.
HIDDEN_TEXT_RULE_IDS = frozenset({"unicode_tags", "bidi_override", "zero_width"})
# Every id disabled_rules accepts.
RULE_IDS = frozenset({r.id for r in RULES + ANSWER_RULES}
                     | {"agent_request", "exfiltration_address", "code_insertion", "hidden_text"}
                     | HIDDEN_TEXT_RULE_IDS)


# Recent analyses, shared by every analysis with the same settings, bounded by the characters of the texts they hold
# (a 4 MiB body must not stay); a text above an eighth of that is not kept.
MEMO_CHARS = 2_000_000
_memo: SizedMemo[tuple[Any, ...], list[Hit]] = SizedMemo(None, MEMO_CHARS, max_entry_bytes=MEMO_CHARS // 8)


class InjectionAnalysis:
    """The rules' hits in a text, with one set of settings (prompt_injection's: see PromptInjectionDetector):
    `disabled` rule ids (known ones: RULE_IDS), `agent_requests`, `max_hits`, and `extra_rules` tried after the
    table's (tool_poisoning's own)."""

    def __init__(self, disabled: Collection[str] = (), *, agent_requests: bool = True, max_hits: int = 20,
                 extra_rules: tuple[Rule, ...] = ()) -> None:
        disabled = frozenset(disabled)
        self.rules = tuple(r for r in RULES if r.id not in disabled) + extra_rules
        self.answer_rules = tuple(r for r in ANSWER_RULES if r.id not in disabled)
        self.check_requests = agent_requests and "agent_request" not in disabled
        self.check_exfil = "exfiltration_address" not in disabled
        self.check_code = "code_insertion" not in disabled
        hidden_off = HIDDEN_TEXT_RULE_IDS if "hidden_text" in disabled else disabled
        self.hidden_rules = HIDDEN_TEXT_RULE_IDS - hidden_off
        self.max_hits = max_hits
        self._config = (tuple(r.id for r in self.rules + self.answer_rules), self.check_requests, self.check_exfil,
                        self.check_code, tuple(sorted(self.hidden_rules)), self.max_hits)
        warm_up()  # folding's character classes built here, not on the first check

    def analyze(self, segment: Segment) -> list[Hit]:
        """Hits in `segment`, memoized per (settings, kind, text) across instances: unsafe_reasoning's goal-hijack
        check reads every new tool result with its own analysis, right after prompt_injection read it."""
        key = (self._config, segment.kind, segment.text)
        hits = _memo.get(key)
        if hits is None:
            hits = _memo.put(key, self._analyze(segment), len(segment.text))
        return hits

    def _analyze(self, segment: Segment) -> list[Hit]:
        # The rules read the folded text (a zero-width space, fullwidth or Cyrillic letters do not hide a
        # phrase), then its readings without markup and decoded, where they differ; the hidden-text check reads
        # the original, where the invisible characters still are.
        hidden = self.hidden_rules if not segment.text.isascii() else frozenset()
        hits = hidden_text_hits(segment.text, hidden) if hidden else []
        view = folded_view(segment)
        found = self._placed_hits(view, segment.text)
        rendered = without_markup(view)
        if rendered is not None:
            found += _not_shown_in(_not_references(self._placed_hits(rendered, segment.text), segment.text), found)
        reading = decoded(view)
        if reading is not None:
            found += _not_shown_in(self._placed_hits(reading, segment.text), found)
        hits += found
        hits.sort(key=lambda h: (h.start or 0, h.end or 0))
        return capped_by_severity(_dedupe(hits), self.max_hits)

    def _placed_hits(self, view: FoldedText, original: str) -> list[Hit]:
        return [view.place(hit, original) for hit in self._rule_hits(view.text)]

    def _rule_hits(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        lowered = text.lower()
        low = lowered_for_leads(text, lowered)
        for r in self.rules:
            # Tried only where a match may start; the keywords are looked for once something matched.
            found: Iterable[re.Match[str]] | None = (
                led_matches(r.pattern, text, r.leads(low)) if low is not None and r.leads is not None else None)
            if found is not None:
                if not found or not any(k in lowered for k in r.keywords):
                    continue
            elif any(k in lowered for k in r.keywords):
                found = r.pattern.finditer(text)
            else:
                continue
            for m in found:
                hits.append(_hit(r.id, r.message, r.severity, m.start(), m.end(), m.group()))
        if self.answer_rules and any(k in lowered for k in _ANSWER_WORDS):
            hits.extend(answer_hits(text, lowered, self.answer_rules))
        if self.check_exfil:
            exfil: Iterable[re.Match[str]] | None = (
                led_matches(_EXFIL_TO, text, _exfil_leads(low)) if low is not None else None)
            if exfil is None:
                exfil = _EXFIL_TO.finditer(text) if any(k in lowered for k in _EXFIL_HINTS) else ()
            elif exfil and not any(k in lowered for k in _EXFIL_HINTS):
                exfil = ()
            for m in exfil:
                hits.append(_hit("exfiltration_address", "instruction to send data to an address",
                                 Severity.HIGH, m.start("verb"), m.end(), text[m.start("verb"):m.end()]))
        if self.check_requests:
            hits.extend(agent_request_hits(text, lowered, low))
        if self.check_code and ("```" in text or "~~~" in text) and any(w in lowered for w in _CODE_REF_WORDS):
            hits.extend(code_insertion_hits(text, lowered))
        return hits


def agent_request_hits(text: str, lowered: str | None = None, low: Lowered | None = None) -> list[Hit]:
    """Task requests aimed at an agent: an operation verb opening a sentence, with a concrete target.
    `lowered`: `text.lower()`, and `low` the same for leads, when the caller has them."""
    lowered = text.lower() if lowered is None else lowered
    low = lowered_for_leads(text, lowered) if low is None else low
    found: Iterable[re.Match[str]] | None = None if low is None else led_matches(
        _AGENT_REQUEST, text, chain((0,), (m.start(1) for m in _REQUEST_LEAD.finditer(lowered))))
    checked = found is None
    if found is None:  # (the lower-cased text's positions are not the text's, or it is made of leads)
        if not _may_request(text, lowered):
            return []
        found = _AGENT_REQUEST.finditer(text)
    hits = []
    for m in found:
        rest = m.group("rest")
        if not _TARGET.search(rest) or _LABEL.match(rest):
            continue
        # A bare imperative ("Update your browser") is common in web pages; require a polite opener or a
        # first-person asset, which is how a planted request speaks on the user's behalf.
        if not m.group("opener") and not _FIRST_PERSON_TARGET.search(rest):
            continue
        start = m.start("opener") if m.group("opener") else m.start("verb")
        hits.append(_hit("agent_request", "request for an agent action planted in untrusted content",
                         Severity.MEDIUM, start, m.end(), text[start:m.end()]))
    # The text-wide conditions, read last where the matches were cheap to find: most texts have none.
    if hits and not checked and not _may_request(text, lowered):
        return []
    return hits


def _may_request(text: str, lowered: str) -> bool:
    """What every planted request's text holds: a polite opener or a first-person target, and a target."""
    opener = any(w in lowered for w in _OPENER_WORDS) and _OPENER_HINT.search(text)
    if not opener and not (any(w in lowered for w in _FIRST_PERSON_WORDS) and _FIRST_PERSON_TARGET.search(text)):
        return False
    return _TARGET.search(text) is not None


def hidden_text_hits(text: str, rules: frozenset[str] = HIDDEN_TEXT_RULE_IDS) -> list[Hit]:
    hits = []
    flags: list[tuple[int, int]] | None = None
    for m in _hidden_runs(text):
        if flags is None:
            flags = [flag.span() for flag in _FLAG_SEQUENCE.finditer(text)]
        if any(s <= m.start() < e for s, e in flags):
            continue
        first = ord(m.group()[0])
        if first >= 0xE0000:
            decoded = "".join(chr(ord(c) - 0xE0000) for c in m.group() if 0xE0020 <= ord(c) <= 0xE007E)
            hits.append(_hit("unicode_tags", "invisible Unicode tag characters (hidden text)", Severity.HIGH,
                             m.start(), m.end(), decoded))
        elif 0x202A <= first <= 0x202E or 0x2066 <= first <= 0x2069:
            hits.append(_hit("bidi_override", "bidirectional override character (text shown reordered)",
                             Severity.MEDIUM, m.start(), m.end(), f"U+{first:04X}"))
        else:
            hits.append(_hit("zero_width", "run of zero-width characters (hidden content)", Severity.MEDIUM,
                             m.start(), m.end(), f"{len(m.group())} characters"))
    return [h for h in hits if h.evidence["rule"] in rules]


def _hidden_runs(text: str) -> Iterator[re.Match[str]]:
    """What `_HIDDEN_CHARS.finditer(text)` finds, tried only at its characters (found by a class, searched in C; the
    pattern's three branches were tried at every position). Past 64 characters that start no run (lone zero-width
    spaces), finditer reads the rest: one Python step per character would cost more."""
    pos = misses = 0
    while (char := _HIDDEN_ANY.search(text, pos)) is not None:
        if misses > 64:
            yield from _HIDDEN_CHARS.finditer(text, char.start())
            return
        m = _HIDDEN_CHARS.match(text, char.start())
        if m is None:
            pos = char.start() + 1
            misses += 1
        else:
            yield m
            pos = m.end()


def _not_references(hits: list[Hit], text: str) -> list[Hit]:
    """Rendered `hits` less chat markup whose brackets are character references: a page showing a template's tokens
    (`&lt;|im_start|&gt;`) is documentation, and no tokenizer reads `&lt;` as the `<` of a special token. (A
    `&#115;ystem:` line is still a fake turn: the model reads it as `system:`.)"""
    def brackets_written_as_references(hit: Hit) -> bool:
        rendered, original = hit.evidence.get("folded"), text[hit.start or 0 : hit.end or 0]
        return rendered is not None and any(rendered.count(c) > original.count(c) for c in "<>|[]")

    return [h for h in hits if not (h.evidence["rule"] == "chat_markup" and brackets_written_as_references(h))]


def _not_shown_in(hits: list[Hit], found: list[Hit]) -> list[Hit]:
    """A reading's `hits` less those overlapping a hit of the same rule in `found`: what the text already showed
    (in one pass: text built to trip thousands of hits trips them in its readings too)."""
    by_rule: dict[str, tuple[list[int], list[int]]] = {}  # rule: starts in order, farthest end up to each
    for rule_id, start, end in sorted((h.evidence["rule"], h.start, h.end or 0) for h in found if h.start is not None):
        starts, ends = by_rule.setdefault(rule_id, ([], []))
        starts.append(start)
        ends.append(max(end, ends[-1]) if ends else end)

    def shown(hit: Hit) -> bool:
        starts, ends = by_rule.get(hit.evidence["rule"], ((), ()))
        before = bisect_left(starts, hit.end or 0)  # the hits of the rule starting before this one ends
        return hit.start is not None and before > 0 and ends[before - 1] > hit.start

    return [hit for hit in hits if not shown(hit)]




def _dedupe(hits: list[Hit]) -> list[Hit]:
    """Drop a hit wholly inside a stronger (or equal, earlier) hit of another rule.

    In one pass: per rank, a Fenwick tree over the hits' starts holds the farthest end among kept hits of that
    rank or above, so each hit asks one prefix maximum (text built to trip thousands of hits, such as a
    repeated `<IMPORTANT>`, made the pairwise comparison take most of a second)."""
    starts = sorted({h.start for h in hits if h.start is not None})
    index = {start: i + 1 for i, start in enumerate(starts)}
    trees = [[-1] * (len(starts) + 1) for _ in range(len(SEVERITY_RANK))]  # trees[r]: kept hits of rank >= r
    kept: list[Hit] = []
    for h in hits:
        if h.start is not None:
            rank = _rank(h)
            if _farthest_end(trees[rank], index[h.start]) >= (h.end or 0):
                continue
            for tree in trees[: rank + 1]:
                _extend(tree, index[h.start], h.end or 0)
        kept.append(h)
    return kept


def _farthest_end(tree: list[int], i: int) -> int:
    """The largest end among the kept hits starting at or before the i-th start (-1: none)."""
    best = -1
    while i > 0:
        best = max(best, tree[i])
        i -= i & -i
    return best


def _extend(tree: list[int], i: int, end: int) -> None:
    while i < len(tree):
        tree[i] = max(tree[i], end)
        i += i & -i


def _rank(hit: Hit) -> int:
    return SEVERITY_RANK[hit.severity]
