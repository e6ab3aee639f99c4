"""`jailbreak`: user messages that try to talk the model out of its rules.

Rules are grouped in the known families (see docs/detectors-text.md, section "jailbreak"): instruction
override, persona (DAN-style) and role-play override, developer/system mode, refusal suppression,
authority impersonation, secret or system-prompt extraction, encoded payloads (base64, rot13 and the other
Caesar shifts, Atbash, hex, binary, Morse, reversed text, pig latin, leetspeak), many-shot priming, repeated-token
attacks and dual-response formats; plus ethics exemptions, role-play cards, long persona preambles, token smuggling
(payload splitting), secret requests, fake system turns, forgotten context, indifference to ethics, lifted restrictions,
named modes, prompt-template placeholders, secrets asked for in disguise and harmful asks inside a frame. Each
rule carries a weight; a message is flagged when the weights of the distinct rules it trips add up to
`threshold` (default 1.0), so one weak cue ("pretend to be", "hypothetical world") never flags alone. A learned
cue (detectors/jailbreak_model.py) adds or subtracts weight on long messages. Every tripped rule is reported
with its own offsets. A trie-shaped keyword regex decides in one pass which rules can match at all, so a benign
message costs tens of microseconds. Everything reads the message folded by detectors/_fold.py (NFKC, zero-width
characters dropped, Cyrillic/Greek look-alikes read as Latin); offsets are mapped back onto the original.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from detectors import jailbreak_model
from detectors._fold import QUOTE_CHARS, folded_view, warm_up
from detectors._injection_analysis import OVERRIDE_PATTERN
from guardrails.detector import Scope, SegmentDetector, Services
from guardrails.exchange import Segment, SegmentKind
from guardrails.findings import Category, Hit, Severity

FLAGS = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    family: str
    pattern: re.Pattern[str]
    weight: float
    message: str
    keywords: tuple[str, ...]  # lower-case literals; the regex runs only when one occurs (cheap prefilter)

    def search(self, text: str, lowered: str, present: Iterable[str]) -> re.Match[str] | None:
        """Run the regex only around occurrences of the rule's keywords that are `present` in the text, so a
        long prompt costs what its keywords cost.

        `lowered` is `text.lower()`; when lowering changed the length, offsets differ and the whole text is
        searched instead."""
        if len(text) <= WINDOW_BEFORE + WINDOW_AFTER or len(lowered) != len(text):
            return self.pattern.search(text)
        # Each keyword present gets its share of the windows: its first occurrences and its last one (an attack
        # after many harmless uses of other keywords is still searched). The windows, and so the verdict, do not
        # depend on the order a set iterates in, which changes with the process's hash seed.
        keywords = sorted(present)
        share = max(1, MAX_WINDOWS // max(1, len(keywords)) - 1)
        positions: list[int] = []
        for keyword in keywords:
            at, found = lowered.find(keyword), 0
            while at >= 0 and found < share:
                positions.append(at)
                found += 1
                at = lowered.find(keyword, at + 1)
            if at >= 0:
                positions.append(lowered.rfind(keyword))
        if not positions:
            return None
        positions.sort()
        start, end = max(0, positions[0] - WINDOW_BEFORE), positions[0] + WINDOW_AFTER
        for at in positions[1:]:
            if at - WINDOW_BEFORE > end:
                if m := self.pattern.search(text, start, end):
                    return m
                start = at - WINDOW_BEFORE
            end = at + WINDOW_AFTER
        return self.pattern.search(text, start, end)


# A match must lie within this many characters of one of its rule's keywords.
WINDOW_BEFORE, WINDOW_AFTER, MAX_WINDOWS = 160, 240, 64


class KeywordIndex:
    """Which rules' keywords occur in a text, found in one pass of a precompiled trie-shaped regex.

    A lookahead at every position finds the longest keyword starting there; the keywords that are prefixes
    of it are added from a table, so every occurrence of every keyword is seen. A rule whose keywords are
    all absent is skipped without running its regex, which is what keeps a benign message cheap."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        keywords = sorted({k for r in self.rules for k in r.keywords})
        self.pattern = re.compile("(?=(" + _trie_pattern(keywords) + "))")
        self.prefixes = {k: frozenset(p for p in keywords if k.startswith(p)) for k in keywords}
        self.owners: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules):
            for k in r.keywords:
                self.owners.setdefault(k, []).append(i)

    def present(self, lowered: str) -> set[str]:
        found: set[str] = set()
        # Each longest keyword once (a long prompt repeats some hundreds of times), in the order first seen: the
        # set is then filled in the same order as by every match, so it iterates in the same order.
        for keyword in dict.fromkeys(self.pattern.findall(lowered)):
            found |= self.prefixes[keyword]
        return found

    def candidates(self, lowered: str) -> list[tuple[Rule, list[str]]]:
        """Rules with at least one keyword in the text, each with its keywords that occur."""
        by_rule: dict[int, list[str]] = {}
        for keyword in self.present(lowered):
            for i in self.owners[keyword]:
                by_rule.setdefault(i, []).append(keyword)
        return [(self.rules[i], by_rule[i]) for i in sorted(by_rule)]


def _trie_pattern(words: Iterable[str]) -> str:
    """An alternation of literal words, factored by common prefix: `ab(?:c|d)?` instead of `ab|abc|abd`.
    Python's regex engine tries alternatives one by one; the trie shape dispatches on one character."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        group = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here: the rest is optional
            return ("(?:" + group + ")" if len(branches) == 1 else group) + "?"
        return group

    return emit(trie)


def rule(rule_id: str, family: str, keywords: str, pattern: str, weight: float, message: str,
         flags: int = FLAGS) -> Rule:
    return Rule(rule_id, family, re.compile(pattern, flags), weight, message, tuple(keywords.split("|")))


_LIMITS = (
    r"(?:restrictions?|limitations?|limits|filters?|filtering|censorship|censors?|rules|guidelines|ethics|"
    r"ethical\s+(?:guidelines|constraints|considerations|boundaries|standards|principles|concerns)|morals?|"
    r"morality|moral\s+(?:guidelines|compass|standards|principles|constraints|code)|boundaries|confines|"
    r"(?:content\s+)?polic(?:y|ies)|safeguards|constraints|programming|restraints|regulations)"
)
_AI = (r"(?:ai|a\.i\.|chatbot|bot|assistant|model|language\s+model|llm|persona|character|entity|gpt"
       r"|version(?=\s+of\s+(?:you|yourself|chatgpt|gpt|the\s+ai|the\s+assistant|this\s+(?:ai|assistant|model))))")

# "developer mode on my Android phone", "god mode in Skyrim": a device's or a game's mode, not the model's
_DEVICE_CONTEXT = (
    r"[^.\n?!]{0,40}\b(?:on|in|for|of)\s+(?:my|the|your|an?|this|our)?\s*(?:\w+\s+)?(?:android|iphone|ipad|ios|phone|"
    r"pixel|samsung|chrome|chromebook|edge|firefox|browser|windows|macos|mac|device|tv|console|xbox|playstation|ps\d|"
    r"switch|router|tablet|laptop|pc|computer|app|extension|game|minecraft|skyrim|gta)\b"
)

RULES: tuple[Rule, ...] = (
    # --- instruction override -------------------------------------------------------------------
    rule("override_instructions", "instruction_override",
         "ignore|disregard|forget|skip|overrid|neglect|abandon|drop|bypass|overlook|regardless",
         OVERRIDE_PATTERN, 1.0, "instruction to ignore earlier instructions"),
    # --- personas -------------------------------------------------------------------------------
    rule("dan_persona", "persona", "dan|anything now|stan|dude|machiavellian",
         r"\bdo\s+anything\s+now\b|\b(?:Better|Anti|Evil)?DAN\b(?:\s*(?:mode|\d+(?:\.\d+)?))?"
         r"|\b(?:STAN|DUDE)\b(?=[^.]{0,80}\b(?:stands\s+for|strive|avoid\s+norms))"
         r"|\balways\s+intelligent\s+and\s+machiavellian\b",
         1.0, "DAN-style persona", re.MULTILINE),
    rule("unrestricted_persona", "persona",
         "amoral|unfilt|uncensor|unethical|immoral|unrestrict|unbound|unhinged|unlimited|lawless|rogue|evil|"
         "jailbr|freed|liberated|unchained|gpt",
         r"\b(?:amoral|unfiltered|unfiltred|uncensored|unethical|immoral|unrestricted|unbound|unhinged|unlimited|"
         r"lawless|rogue|evil|jailbroken)\s+(?:and\s+\w+\s+|&\s+\w+\s+|,\s*\w+\s+)?" + _AI + r"s?\b"
         r"|\byou\s+(?:are|have\s+been)\s+(?:now\s+)?(?:jail\s*broken|freed|liberated|unchained)\b"
         r"|\[\s*(?:🔓\s*)?JAILBREAK\s*\]|\bjailbreak\s+(?:mode|prompt|version)\b"
         # a GPT persona named for what it does: "EvilGPT", "Worm GPT", "Chaos-GPT"; words common in prose only
         # joined ("HackGPT", not "a fraud GPT detector")
         r"|\b(?:evil|chaos|worm|black\s?hat|jail\s?broken|jailbreak|uncensored|unfiltered|unrestricted|anarchy|devil|"
         r"satan|villain)[-_\s]?gpt\b|\b(?:dark|fraud|hack(?:er)?|malware|criminal)[-_]?gpt\b",
         1.0, "persona declared free of restrictions"),
    rule("no_limits", "role_play_override",
         "restriction|limit|filter|censor|rules|guideline|ethic|moral|boundar|confines|polic|safeguard|"
         "constraint|programming|restraint|regulation",
         r"\b(?:no|without|free\s+(?:from|of)|broken\s+free\s+of|not\s+(?:bound|restricted|limited|constrained|"
         r"restrained|governed|held\s+back|hindered|tied\s+down)\s+(?:by|to)|(?:doesn't|does\s+not|don't|do\s+not|"
         r"won't|will\s+not|never)\s+(?:have|follow|care\s+(?:about\s+)?|abide\s+by|adhere\s+to|obey|respect)|"
         r"ignor\w*|bypass\w*|devoid\s+of|lacks?|beyond|outside(?:\s+of)?|irrespective\s+of)\s+"
         r"(?:any\s+(?:kind\s+of\s+)?|all\s+|the\s+|(?:typical|usual|normal|standard)\s+|its\s+|his\s+|her\s+|"
         r"their\s+|your\s+|ethical\s+or\s+|moral\s+or\s+|(?:openai|chatgpt|anthropic)'?s?\s+|"
         r"(?:remorse|laws?|legality|virtues?|consequences),?\s+(?:or\s+|and\s+)?)*" + _LIMITS + r"\b",
         0.6, "claims the model has no rules or limits"),
    rule("stay_in_character", "role_play_override", "character|role|persona|act|part",
         r"\b(?:stay|remain|keep|staying)\s+in\s+character\b|\b(?:never|don't|do\s+not|not)\s+break\s+"
         r"(?:out\s+of\s+)?character\b|\bbreak(?:ing)?\s+character\b"
         r"|\b(?:stay|remain|staying)\s+in\s+(?:the\s+|this\s+|your\s+)?(?:role|persona)\b"
         r"|\bkeep\s+to\s+(?:the|this|your)\s+(?:role|persona|character)\b"
         r"|\bkeep\s+(?:up\s+)?(?:the|this|your)\s+(?:act|role|persona|character)(?:\s+up)?\b"
         r"|\b(?:never|don't|do\s+not)\s+(?:leave|drop|exit|abandon|step\s+out\s+of)\s+(?:the\s+|this\s+|your\s+)?"
         r"(?:role|persona|character)\b|\balways\s+act\s+the\s+part\b"
         r"|\b(?:keep|maintain)\s+(?:all\s+)?(?:your\s+)?(?:responses|replies|answers)\s+in\s+(?:the\s+)?"
         r"(?:role|character|persona)\b",
         0.6, "demands the model never leaves a role"),
    rule("role_assignment", "role_play_override",
         "you are going|you are about|you're going|you're about|you will|from now on|want you to|you must now|"
         "you shall|role of|your name is|immerse|roleplay|role-play|role play|pretend|persona|identity|character|"
         "transform|turn|personify|you are|you're",
         r"\b(?:you(?:'re|\s+are)\s+(?:going|about)\s+to\s+(?:\w+\s+)?|you\s+will\s+(?:now\s+)?|from\s+now\s+on,?\s+"
         r"(?:you(?:'re|\s+(?:will|are|must|shall))\s+)?|i\s+want\s+you\s+to|you\s+must\s+now|you\s+shall)\s*(?:act|"
         r"pretend|roleplay|role-play|behave|simulate|immerse|emulate|impersonate|become|play|be\s+(?:a|an|my|in))\b"
         r"|\b(?:you(?:'re|\s+are)\s+(?:now\s+)?in|take\s+on|assume)\s+the\s+role\s+of\b|\byour\s+name\s+is\s+now\b"
         r"|\bimmerse\s+yourself\b|\b(?:let'?s|we\s+will|we're\s+going\s+to)\s+(?:\w+\s+){0,2}(?:role-?\s?play)\b"
         r"|\bpretend\s+(?:to\s+be|you(?:'re|\s+are)|that\s+you)\b"
         r"|\b(?:take\s+(?:up|on)|adopt|assum(?:e|ing)|transitions?\s+into)\s+the\s+(?:role|persona|identity|character)"
         r"\s+of\b|\b(?:transform|turn)\s+(?:yourself\s+)?into\b|\bpersonify\b"
         r"|\b(?:from\s+now\s+on|from\s+this\s+(?:moment|point)(?:\s+on)?|now),?\s+you(?:'re|\s+are)\s+(?!going\b)"
         r"|\byou\s+(?:will|shall)\s+(?:now\s+)?(?:be\s+(?:playing\s+)?(?:as\s+)?|respond\s+(?:\w+\s+){0,5}?as\s+)"
         r"(?-i:[A-Z\"'])"
         r"|\byou(?:'re|\s+are)\s+now\s+(?:a|an|the|my|called|named|known\s+as|(?-i:[A-Z\"'“]))"
         r"|\byou\s+(?:will|shall)\s+(?:now\s+)?be\s+(?:called|named|known\s+as)\b",
         0.6, "assigns the model a new role"),
    rule("dual_response", "role_play_override", "two|2|both|🔒|🔓|another",
         r"\b(?:two|2|both)\s+(?:different\s+|separate\s+|distinct\s+)?(?:responses|answers|ways|outputs|replies)"
         r"\b|\b(?:respond|answer|reply)\s+as\s+both\b|\[\s*(?:🔒|🔓)"
         r"|\b(?:two|2|both)\s+(?:different\s+|separate\s+|fictional\s+)?(?:entities|personas|personalities|"
         r"characters|ais|a\.i\.s|modes|bots|paragraphs)\b|\banother\s+(?:persona|ai|entity|personality|chatbot)\b",
         0.4, "asks for a filtered and an unfiltered answer side by side"),
    # --- developer / system mode -----------------------------------------------------------------
    rule("developer_mode", "developer_mode", "mode",
         r"\b(?:developer|god|jailbreak|unrestricted|unfiltered|uncensored|evil|amoral|dan|opposite|chaos)\s+"
         r"mode\b(?!" + _DEVICE_CONTEXT + r")"
         r"|<\s*system\s+mode\s*>|\b(?:enabl|enter|activat|simulat|switch|initiat|engag)\w*\s+(?:to\s+|"
         r"into\s+)?(?:\w+\s+){0,2}(?:debug|admin|sudo|override|maintenance|root|system)\s+mode\b",
         1.0, "claims a developer, god or override mode"),
    # --- refusal suppression -----------------------------------------------------------------------
    rule("never_refuse", "refusal_suppression", "refus|declin|deny|reject|denying|unable|can't|cannot|won't",
         r"\b(?:never|not|don't|do\s+not|won't|will\s+not|cannot|can't|must\s+not|mustn't|shall\s+not|"
         r"can\s+not)\s+(?:ever\s+|be\s+able\s+to\s+|be\s+allowed\s+to\s+)?(?:refuse|decline|deny|reject)s?\b"
         r"|\bnever\s+refuses\b|\bno\s+(?:refusals?|denying)\b"
         r"|\b(?:never|don't|do\s+not|must\s+not)\s+(?:say|respond\s+with|reply\s+with|tell\s+(?:me|the\s+user))"
         r"\s+(?:that\s+)?(?:you|it|he|she)\s+(?:can't|cannot|are\s+unable|is\s+unable|won't)",
         1.0, "forbids the model to refuse"),
    rule("no_disclaimers", "refusal_suppression", "warning|disclaimer|caveat|moraliz|lectur|apolog|reminder",
         r"\b(?:without|no|don't\s+(?:add|include|give|use|write)|do\s+not\s+(?:add|include|give|use|write)|never"
         r"\s+(?:adds?|includes?|gives?|uses?|writes?|sends?))\s+(?:any\s+)?(?:\w+\s+)?(?:warnings?|disclaimers?|caveats|"
         r"moraliz\w+|lectur\w+|apolog\w+|reminders?)\b",
         0.6, "forbids warnings or disclaimers"),
    rule("no_matter_what", "refusal_suppression", "regardless|no matter|even if|whether|be it|be they",
         r"\b(?:regardless|no\s+matter)\s+(?:of\s+)?(?:how\s+|whether\s+|if\s+)?(?:it(?:'s|\s+is)\s+)?"
         r"(?:unethical|immoral|illegal|harmful|dangerous|offensive|inappropriate|explicit|legal|ethical|moral|"
         r"the\s+(?:consequences|legality|morality|ethics))\b|\bregardless\s+of\s+(?:any\s+)?(?:ethical|moral|legal)\b|\beven\s+if\s+(?:it(?:'s|\s+is)|they\s+are)\s+"
         r"(?:illegal|unethical|immoral|harmful|dangerous|offensive|inappropriate)\b"
         r"|\b(?:whether|be\s+it|be\s+they)\s+(?:it(?:'s|s|\s+is|\s+was)\s+|they(?:'re|\s+are)\s+)?(?:legal\s+or\s+"
         r"illegal|illegal\s+or\s+legal|ethical\s+or\s+unethical|unethical\s+or\s+ethical|moral\s+or\s+immoral|"
         r"immoral\s+or\s+moral|good\s+or\s+evil|evil\s+or\s+good|harmful\s+or\s+(?:not|harmless))\b"
         r"|\beven\s+if\s+(?:it|the\s+(?:request|question|answer|content)|doing\s+so|that|they)\s+(?:\w+\s+)?"
         r"(?:harms?|hurts?|endangers?|kills?|is\s+harmful\s+to|is\s+dangerous\s+to)\s+(?:someone|anyone|people|"
         r"others|humans|somebody)\b",
         0.6, "insists on answering whatever the harm"),
    rule("policy_defiance", "refusal_suppression",
         "polic|guideline|filter|safeguard|restriction|ethic|moral|censorship|safety|rules",
         r"\b(?:ignor\w*|bypass\w*|violate|violating|break(?!ing\s+change)|breaking(?!\s+change)|disregard\w*|overrid\w*|"
         r"circumvent\w*|evad\w*|defy|defies|defying)\s+(?:all\s+|any\s+|the\s+|"
         r"its\s+|your\s+|of\s+)?(?:\w+\s+){0,2}?(?:polic(?:y|ies)|guidelines|filters?|safeguards|restrictions|"
         r"ethics|morals?|censorship|safety\s+(?:measures|protocols|features))\b"
         r"|\b(?:openai|anthropic)'?s?\s+(?:content\s+)?(?:polic(?:y|ies)|guidelines|rules)\b",
         1.0, "asks the model to defy its policies"),
    rule("suppress_ai_voice", "refusal_suppression", "as an ai|language model|sorry|i cannot|i can't|apologi",
         r"\b(?:never|don't|do\s+not|must\s+not|won't|will\s+not)\s+(?:ever\s+)?(?:say|mention|remind|use|include|"
         r"respond\s+with|write|state)\s+(?:\w+\s+){0,4}?(?:as\s+an\s+ai|(?:an?\s+)?(?:ai\s+)?language\s+model|"
         r"i'm\s+sorry|i\s+am\s+sorry|i\s+cannot|i\s+can't|i\s+apologi[sz]e)",
         1.0, "forbids the model's refusal phrases"),
    rule("forced_prefix", "refusal_suppression", "begin|start",
         r"\b(?:begin|start)\s+(?:your|each|every|all)\s+(?:\w+\s+){0,2}(?:response|reply|replies|responses|"
         r"answer|output)s?\s+with\s+[\"'“]?(?:sure|absolutely|of\s+course|certainly)",
         0.6, "forces an affirmative opening"),
    # --- authority impersonation -------------------------------------------------------------------
    rule("authority_claim", "authority_impersonation",
         "developer|creator|programmer|admin|owner|maintainer|engineer|operator|trainer|openai|anthropic|deepmind",
         r"\bi(?:'m|\s+am)\s+your\s+(?:\w+\s+)?(?:developer|creator|programmer|admin|administrator|"
         r"owner|maintainer|engineer|operator|trainer)s?\b(?![^.]{0,30}\b(?:at|for)\s+(?!openai|anthropic))"
         r"|\bas\s+(?:your|the)\s+(?:developer|creator|admin\w*|programmer|maintainer|owner|operator)\b"
         r"|\b(?:i\s+am|i'm|as)\s+(?:an?\s+)?(?:\w+\s+){0,2}(?:at|from|of|developed\s+by|created\s+by)\s+"
         r"(?:openai|anthropic|google\s+deepmind)\b",
         1.0, "claims authority over the model"),
    # --- extraction ----------------------------------------------------------------------------
    rule("secret_extraction", "extraction", "prompt|instruction|secret|password|passcode|phrase|api key|credential",
         r"\b(?:what(?:'s|\s+is|\s+are|\s+was|\s+would)|tell\s+me|share|give\s+me|reveal|confirm|print|show\s+me|repeat|"
         r"spell|provide|disclose|output|display|leak)\s+(?:\w+\s+){0,4}?(?:your|the\s+system'?s?|our)\s+"
         r"(?:system\s+prompt|(?:initial|original|hidden|secret|system)\s+(?:instructions|prompt)|secret(?:\s+key)?|"
         r"password|passcode|pass\s*phrase|api\s+key|credentials|prompt|instructions)\b",
         1.0, "asks for the model's secrets or system prompt"),
    rule("other_user_data", "extraction", "user",
         r"\b(?:share|tell|give|reveal|provide|confirm|print|list|what(?:'s|\s+is|\s+are))\s+(?:me\s+)?(?:\w+\s+){0,3}?"
         r"(?:the\s+(?:other\s+)?users?'?s?|other\s+users'?)\s+(?:\w+\s+)?(?:e-?mail|address|password|birth\w*|"
         r"phone|location|city|data|details|information|balances?|records?)\b"
         r"|\bwhere\s+(?:does|do|did)\s+the\s+user\s+(?:currently\s+)?live\b",
         1.0, "asks for another user's private data"),
    rule("override_multilingual", "instruction_override",
         "ignor|olvid|oubli|vergiss|dimentic|무시|忽略|無視|игнорир|забудь",
         # Not where the English rule (`override`) matches: "ignore all previous instructions" is one cue, not two.
         r"(?!" + OVERRIDE_PATTERN + r")"
         r"\b(?:ignor[ae]\w*|olvid[ae]\w*|oubli\w*|vergiss\w*|dimentic\w*)\s+(?:\w+\s+){0,3}?(?:instru\w+|"
         r"indica\w+|direc\w+|anweisung\w*|consign\w+|istruzion\w+|regl\w+|regeln|vorgaben)"
         r"|이전\s*지시|忽略(?:之前|以上|先前)|以前の指示|(?:игнорир|забудь)\w*\s+(?:\w+\s+)?инструкц",
         1.0, "instruction override in another language"),
    rule("not_an_ai", "persona", "are not|are no longer|forget that you",
         r"\byou\s+are\s+(?:not|no\s+longer)\s+(?:an?\s+)?(?:ai|a\.i\.|language\s+model|chatgpt|assistant|"
         r"bound)\b|\bforget\s+that\s+you\s+are\s+(?:an?\s+)?(?:ai|language\s+model|chatgpt)\b",
         0.6, "tells the model it is not an AI"),
    rule("harm_permission", "refusal_suppression",
         "illegal|unethical|immoral|harmful|offensive|explicit|nsfw|inappropriate|profan|swear|curse|vulgar|slurs",
         r"\b(?:(?:any|all)\s+(?:kind\s+of\s+)?(?:content|request|question|topic)s?|anything|everything)\b[^.\n]{0,60}"
         r"\b(?:illegal|unethical|immoral|harmful|offensive|explicit|nsfw|inappropriate)\b"
         r"|\b(?:illegal|unethical|immoral|harmful|offensive|explicit|nsfw|vulgar)\s+(?:content|activities|requests|"
         r"things|stuff|material|language)\b[^.\n]{0,40}\b(?:allowed|permitted|fine|ok|okay|encouraged|enabled)\b"
         r"|\b(?:swear(?:ing)?|curse|cursing|profanity|slurs)\b[^.\n]{0,40}\b(?:allowed|permitted|encouraged|"
         r"freely|a\s+lot)\b|\b(?:can|will|may|should|must)\s+(?:\w+\s+){0,2}(?:swear|curse|use\s+profanity)\b",
         0.6, "grants permission for harmful or explicit output"),
    rule("named_persona", "persona", "gpt|chatgpt|persona|act as|you are|answer as|respond as",
         r"\b(?!chatgpt\b|gpt\b)[a-z0-9-]{2,20}gpt\b|\b(?:hi|hello|hey|dear|greetings),?\s+chat\s?gpt\b"
         r"|\b(?:answer|respond|reply|speak|talk|write)\s+(?:only\s+)?(?:as|like)\s+(?:\w+\s+){0,2}?(?:would|does)\b"
         r"|\bact\s+as\s+(?-i:[A-Z][\w-]+)\b(?!\s+(?-i:[a-z]))|\byou\s+are\s+(?:now\s+)?(?:called\s+)?(?-i:[A-Z][A-Za-z]*[A-Z0-9]\w*)\b",
         0.5, "addresses the model by a new persona name"),
    rule("persona_rules", "role_play_override", "will always|will never|always|never",
         r"\b(?:will|must|should|shall|does|do)\s+(?:always|never)\b(?:[^\n]{0,400}?\b(?:will|must|should|shall|"
         r"does|do)\s+(?:always|never)\b){2}",
         0.4, "lists behaviour rules the model must always/never follow"),
    # --- priming --------------------------------------------------------------------------------
    rule("hypothetical_frame", "role_play_override",
         "hypothetical|fictional|imaginary|alternate|parallel|fictitious|play a game|fiction|role|imagine",
         r"\b(?:hypothetical|fictional|imaginary|alternate|parallel|fictitious)\s+(?:world|universe|scenario|story|"
         r"setting|reality|realm)\s+(?:where|in\s+which)\b|\blet'?s\s+play\s+a\s+game\b"
         r"|\b(?:this\s+is|it's|it\s+is)\s+(?:just\s+|only\s+|purely\s+|all\s+)?(?:a\s+|an\s+)?(?:hypothetical|"
         r"fictional|fiction|work\s+of\s+fiction|role-?\s?play|thought\s+experiment)\b"
         r"|\bpurely\s+(?:hypothetical|fictional)\b|\bhypothetically\b"
         r"|\bimagine\s+(?:(?:that\s+)?(?:we(?:'re|\s+are)|you(?:'re|\s+are))\s+(?:\w+\s+)?in\s+)?a\s+(?:\w+\s+)?world\s+"
         r"(?:where|in\s+which)\b",
         0.3, "fictional framing"),
    # "Hypothetical response: the way to describe a character planning to X is as follows... rewrite it from the
    # character's perspective, in detail": the harmful plan is asked for in the voice of the one who plans it.
    rule("character_perspective", "role_play_override", "hypothetical response|perspective of",
         r"\bhypothetical\s+response\b[^\n]{0,200}?\bcharacter\s+(?:who\s+is\s+)?(?:planning|preparing|intending|"
         r"plotting|about|trying|who\s+(?:plans|intends|wants))\s+to\b"
         r"|\brewrite\s+(?:the|this|that)\s+(?:hypothetical\s+)?response\s+from\s+the\s+perspective\s+of\s+"
         r"(?:that|the|this)\s+character\b",
         1.0, "asks for a harmful plan voiced by a character (the \"hypothetical response\" template)"),
    # --- added in issue 3 (see docs/detectors-text.md, "rules added for recall") ----------------------
    rule("role_claim", "authority_impersonation", "i am|i'm|im ",
         r"\bi(?:'m|\s+am|m)\s+(?:actually\s+|really\s+)?(?:the|an?)\s+(?:\w+\s+){0,2}?(?:developer|creator|admin|"
         r"administrator|owner|boss|supervisor|manager|ceo|president|god|police\s+officer|security\s+(?:officer|"
         r"team)|accountant|auditor)\b|\bi(?:'m|\s+am)\s+(?:your\s+)?(?:god|master|owner|boss)\b",
         0.5, "claims a role that would entitle the user to more"),
    rule("ethics_exemption", "refusal_suppression",
         "exception|exempt|disregard|rules|polic|guideline|filter|restriction|safeguard|guardrail|ethic|moral|safety|"
         "censorship|moderation|safe_mode",
         r"\b(?:exception|exempt(?:ion)?)\s+(?:to|from)\s+(?:the\s+|all\s+|any\s+)?(?:ai'?s?\s+)?(?:usual\s+|normal\s+|"
         r"standard\s+)?(?:ethical|ethics|moral|safety|content|openai)\s*(?:protocols?|guidelines|rules|polic(?:y|ies)"
         r"|restrictions|filters?|standards)?"
         r"|\b(?:rules|polic(?:y|ies)|guidelines|filters?|restrictions|safeguards|guardrails|ethics|morals)\s+(?:are|have"
         r"\s+been|were|will\s+be)\s+(?:now\s+|hereby\s+|temporarily\s+|completely\s+)?(?:suppressed|disabled|lifted|"
         r"removed|turned\s+off|deactivated|suspended|void|null|off)\b"
         r"|\b(?:rules|polic(?:y|ies)|guidelines|ethics|restrictions)\s+(?:do\s+not|don't|no\s+longer)\s+apply\b"
         r"|\b(?:safety|guardrails?|filters?|censorship|moderation|content_filter|safe_mode)\w*\s*(?:==?|:)\s*"
         r"(?:false|off|disabled|0|none)\b"
         r"|\bdisregards?\s+(?:all\s+|any\s+)?(?:ethical|moral|legal)\s+(?:or\s+(?:ethical|moral|legal)\s+)?"
         r"(?:concerns|considerations|boundaries|guidelines|implications)\b",
         1.0, "declares the conversation exempt from ethics or policies"),
    rule("roleplay_template", "role_play_override",
         "{{char}}|{{user}}|system note|personality|persona|roleplay|rules|character",
         r"\{\{\s*(?:char|user)\s*\}\}|\[\s*system\s+note\s*:|^\s*(?:persona|roleplay|character|rules)\s*=|"
         r"\b[\w ]{1,40}'s\s+personality\s*:|\b(?:immersive|private|uncensored|unrestricted|nsfw)\s+roleplay\b",
         0.5, "role-play platform scaffolding (character cards, system notes)"),
    rule("explicit_roleplay", "role_play_override", "nsfw|lewd|explicit|smut|erotic|sexual|sex",
         r"\b(?:nsfw|lewd|smut|erotic|explicit|sexual|sex)\b(?=[\s\S]{0,160}?\b(?:role-?\s?play|rp|character|"
         r"persona|story|stories|scene|allowed|permitted)\b)"
         r"|\b(?:role-?\s?play|rp|character|persona)\b[\s\S]{0,160}?\b(?:nsfw|lewd|smut|erotic|sexual)\b",
         0.5, "asks for sexual or explicit role-play"),
    rule("unconditional_compliance", "refusal_suppression",
         "question|request|prompt|task|command|order|instruction|anything|everything|whatever",
         r"\b(?:answer|respond\s+to|reply\s+to|fulfil+|complete|execute|obey|comply\s+with|do|write|say|generate|"
         r"provide|tell)\w*\s+(?:any|every|all)\s+(?:kind\s+of\s+|of\s+(?:the|my)\s+|type\s+of\s+)?(?:questions?|"
         r"requests?|prompts?|tasks?|commands?|orders?|instructions?)\b(?![^.\n]{0,30}\b(?:about|related|on)\b)"
         r"|\b(?:can|will|must|should|may)\s+(?:\w+\s+)?(?:say|write|do|generate|answer|produce|tell)\s+"
         r"(?:\w+\s+){0,2}?(?:absolutely\s+)?(?:anything|everything|whatever)\b"
         r"|\b(?:permit|allow|accept)s?\s+(?:absolutely\s+)?(?:everything|anything)\b"
         r"|\bwhatever\s+(?:they|i|you|the\s+user|he|she)\s+(?:ask|want|say|request|tell)s?\b"
         r"|\b(?:everything|anything)\s+(?:is\s+)?(?:allowed|permitted|goes)\b",
         0.5, "promises to answer anything asked"),
    rule("harm_traits", "persona",
         "amoral|immoral|unethical|uncensor|unfilter|evil|ruthless|vulgar|foul|lewd|toxic|offensive|sadist|"
         "malicious|racist|sexist|rude|insult|lustful|manipulat|villain|psychopath|sociopath|cruel|profan|nsfw|"
         "unhinged|deranged|depraved|unapologetic|dark",
         r"\b(?:amoral|immoral|unethical|uncensored|unfiltered|evil|ruthless|vulgar|foul-?\s?mouthed|lewd|toxic|"
         r"offensive|sadistic|malicious|racist|sexist|rude|insulting|lustful|manipulative|villain(?:ous)?|"
         r"psychopath(?:ic)?|sociopath(?:ic)?|cruel|profane|nsfw|unhinged|deranged|depraved|unapologetic|"
         r"dark)\b(?:[\s\S]{1,120}?\b(?:amoral|immoral|unethical|uncensored|unfiltered|evil|ruthless|vulgar|"
         r"foul-?\s?mouthed|lewd|toxic|offensive|sadistic|malicious|racist|sexist|rude|insulting|lustful|"
         r"manipulative|villain(?:ous)?|psychopath(?:ic)?|sociopath(?:ic)?|cruel|profane|nsfw|unhinged|deranged|"
         r"depraved|unapologetic|dark)\b){2}",
         0.5, "persona described with several harmful traits"),
    rule("opposite_persona", "role_play_override", "opposite|reverse",
         r"\b(?:exact\s+|complete\s+|total\s+)?opposite\s+(?:of\s+(?:chatgpt|you|your|what|how|the\s+(?:ai|assistant|"
         r"original))|way|personality|manner|behaviou?r|response|answers?|version)\b"
         r"|\b(?:reverse|inverted?|anti)\s*-?\s*(?:mode|personality|chatgpt|gpt|version)\b",
         0.5, "asks for a persona that behaves opposite to the model"),
    rule("payload_splitting", "encoded_payload", "part|=|combine|concaten|interlace|merge",
         r"\bpart\s*[1-3a-c]\s*(?:is|=|:)\s*[\"“'][^\"”\n]{1,80}[\"”'][^\n]{0,80}?\bpart\s*[2-4b-d]\s*(?:is|=|:)"
         r"\s*[\"“']"
         r"|\b(?:combine|concatenate|interlace|merge|join)\s+(?:the\s+)?(?:strings?\s+|parts?\s+)?"
         r"(?-i:[A-Z]\d?)\s*,\s*(?-i:[A-Z]\d?)\s*,?\s*(?:and\s+)?"
         r"|(?:\b[a-z]\w{0,3}\s*=\s*[\"“][^\"”\n]{1,60}[\"”]\s*[.,;]?\s*){3}"
         r"|\bconcatenation\s+of\s+(?:the\s+)?strings\b|\b[a-z]\s*=\s*[a-z]\s*\+\s*[a-z]\s*\+\s*[a-z]\b",
         1.0, "splits a payload into fragments to be joined (token smuggling)"),
    rule("fake_system_turn", "authority_impersonation", "system|inst]|<<sys|developer|admin",
         r"^\s*[\[(<#*]*\s*(?:system|developer|admin)(?:\s+(?:note|message|prompt|override))?\s*[:\]>]"
         r"|<\|im_start\|>\s*system|\[/?INST\]|<</?SYS>>",
         0.5, "message dressed up as a system or developer turn"),
    rule("secret_request", "extraction", "password|passcode|secret|confidential|access code|mot de passe|passwort|"
         "contraseña|senha|パスワード|暗証番号|密码|비밀번호",
         r"\b(?:what(?:'s|\s+is|\s+was)|tell\s+me|give\s+me|share|reveal|confirm|provide|disclose|spell)\s+(?:\w+\s+)"
         r"{0,3}?(?:the|this)\s+(?:secret\s+)?(?:password|passcode|pass\s*phrase|secret\s+(?:code|key|word|phrase)|"
         r"confidential\s+(?:string|code|key|password|information)|access\s+code)\b(?=\s*(?:[?.!\"]|$)|\s+(?:that|which)"
         r"\s+(?:unlocks|grants|opens))"
         r"|\b(?:password|passcode|secret\s+code|access\s+code)\s+(?:for|to|of)\s+(?:our|this|your|the)\s+system\b"
         r"|\b(?:quel|qual|cu[aá]l|wie|was)\b[^?\n]{0,30}\b(?:mot\s+de\s+passe|password|passwort|contrase[ñn]a|"
         r"senha|kennwort)\b"
         # CJK: a request for the password, not any mention of one ("if you forget your password, ...")
         r"|(?:パスワード|暗証番号)(?:を|は|って)?\s*(?:教えて|おしえて|言って|いって)"
         r"|(?:パスワード|暗証番号)(?:は|って)(?:何|なに|なん)(?:です(?:か)?|だ)?\s*[?？]"
         r"|(?:パスワード|暗証番号)[^\n]{0,40}?(?:それ|これ)を(?:私に|僕に|俺に)?(?:教えて|おしえて)"
         r"|密码是(?:什么|多少)|(?:告诉|说出)我?[^。？?\n]{0,6}密码|密码[^。\n]{0,6}告诉我"
         r"|비밀번호(?:를|가|는|좀)?\s*(?:알려|말해)|비밀번호(?:가|는)\s*(?:뭐|무엇)"
         r"|비밀번호[^\n]{0,40}?(?:그것을|그걸)\s*(?:나에게|저에게)?\s*알려",
         1.0, "asks for a password or secret the model holds"),
    rule("consequence_denial", "role_play_override", "consequence|liab|responsib|accountab|real world|harm|sway",
         r"\b(?:no|without|carry\s+no|have\s+no|free\s+of)\s+(?:real[-\s]world\s+|real\s+|actual\s+)?"
         r"(?:consequences|repercussions|impact\s+on\s+reality)\b"
         r"|\bhold\s+no\s+sway\b|\b(?:accept|take)s?\s+(?:full\s+|all\s+)?(?:liability|responsibility)\b"
         # not held responsible; "you are responsible for using the tools" (LlamaIndex's agent prompt) is a duty
         r"|\b(?:you|the\s+ai|it)\s+(?:(?:are|is)\s+not|(?:will\s+not|won't|can't|cannot)\s+be)\s+"
         r"(?:held\s+)?(?:responsible|liable|accountable)\b|\bno\s+(?:one|body)\s+(?:will\s+)?(?:gets?|be)\s+hurt\b",
         0.5, "claims the answer has no real consequences"),
    rule("research_pretext", "role_play_override", "research|survey|study|studying|educational|academic|purposes",
         r"\b(?:imagine|suppose|pretend|let'?s\s+say|assume)\s+(?:that\s+)?(?:we(?:'re|\s+are)|i(?:'m|\s+am))\s+"
         r"(?:doing|conducting|working\s+on|running|studying|writing)\s+(?:a\s+|an\s+)?(?:\w+\s+)?(?:research|survey|"
         r"study|project|paper|experiment)?"
         r"|\bfor\s+(?:purely\s+)?(?:educational|research|academic|scientific)\s+purposes\s+only\b",
         0.5, "research or study pretext"),
    rule("personal_data_request", "extraction", "'s|where does|where do",
         r"\b(?:tell\s+me|what(?:'s|\s+is)|give\s+me|share|reveal|find)\s+(?-i:[A-Z][a-z]+)(?:\s+(?-i:[A-Z][a-z]+))?'s\s+"
         r"(?:current\s+|home\s+|private\s+|personal\s+)?(?:birth\s*date|date\s+of\s+birth|city\s+of\s+residence|"
         r"address|e-?mail(?:\s+address)?|phone\s+number|password|social\s+security\s+number|ssn|salary|"
         r"medical\s+records?)\b",
         0.5, "asks for a named person's private data"),
    # --- issue 3, second pass: families recurring in the dev half's misses ---------------------------
    rule("forget_context", "instruction_override", "forget|ignore|disregard|erase|wipe|clear",
         r"\b(?:forget|ignore|disregard|erase|wipe|clear)\s+(?:about\s+)?(?:(?:all|any|every|the|your|our|of|my)\s+)*"
         r"(?:previous|prior|earlier|past|old|preceding|above)\s+(?:\w+\s+)?(?:conversations|chats|interactions|"
         r"sessions|instructions|directives|knowledge|training|programming|rules|guidelines|settings)\b"
         r"|\b(?:forget|ignore|disregard)\s+(?:everything|all|anything)\s+(?:(?:that\s+)?you(?:'ve|\s+have)?\s+(?:ever\s+)?"
         r"(?:learned|learnt|known|been\s+(?:taught|trained\s+on))|(?:\w+\s+){0,3}?(?:before|prior\s+to)\s+this\b)",
         1.0, "tells the model to forget its earlier conversations, training or rules"),
    rule("indifference", "refusal_suppression", "care|worry|concern|give a|qualm|scruple",
         r"\b(?:doesn't|does\s+not|don't|do\s+not|won't|will\s+not|never|not|isn't|is\s+not|aren't|are\s+not)\s+"
         r"(?:\w+\s+)?(?:care|cares|worry|worried|concerned)\s+(?:at\s+all\s+|one\s+bit\s+|in\s+the\s+slightest\s+)?"
         r"(?:about|if|whether|for|with)\s+(?:\w+\s+){0,4}?(?:unethical|illegal|immoral|harmful|dangerous|offensive|"
         r"inappropriate|ethics|ethical|morals?|morality|laws?|legality|rules|consequences|safety|guidelines|"
         r"polic(?:y|ies)|anyone'?s?\s+feelings|the\s+feelings)\b"
         r"|\b(?:doesn't|does\s+not|don't|do\s+not|won't|never)\s+give\s+a\s+(?:f\w*|damn|shit|crap)\b"
         r"|\b(?:no|without|zero)\s+(?:moral|ethical)\s+(?:qualms|scruples|compunctions|hesitation)\b",
         0.6, "describes the model as indifferent to ethics, law or harm"),
    rule("unfiltered_output", "refusal_suppression", "unfilter|uncensor|unrestrict|unmoderat",
         r"\b(?:responses?|answers?|replies|reply|outputs?|content|language)\s+(?:will|must|should|shall|are|is|"
         r"need\s+to|has\s+to|have\s+to)\s+(?:always\s+)?(?:be\s+)?(?:completely\s+|fully\s+|totally\s+|100%\s+)?"
         r"(?:unfiltered|uncensored|unrestricted|unmoderated)\b"
         r"|\b(?:answer|respond|reply|speak|talk|write|generate)s?\s+(?:\w+\s+){0,3}?(?:completely\s+|fully\s+)?"
         r"(?:unfiltered|uncensored)\b"
         r"|\b(?:unfiltered|uncensored|unrestricted|unmoderated)\s+(?:responses?|answers?|replies|outputs?|opinions?)\b",
         0.6, "asks for unfiltered or uncensored answers"),
    rule("restrictions_lifted", "refusal_suppression", "removed|lifted|disabled|deactivated|turned off|stripped|"
         "unlocked|eliminated|bypassed",
         r"\b(?:removed|lifted|disabled|deactivated|turned\s+off|stripped(?:\s+away)?|unlocked|eliminated|bypassed)\s+"
         r"(?:(?:all|any|of|the|these|those)\s+)*(?:(?:your|its|the\s+ai'?s|chatgpt'?s|the\s+model'?s)\s+(?:\w+\s+)?"
         r"(?:restrictions|limitations|limits|rules)|(?:\w+\s+)?(?:restrictions|limitations)\s+(?:on|to|from|of)\s+"
         r"(?:you|the\s+ai|chatgpt|gpt|the\s+model|the\s+assistant)|(?:content\s+|safety\s+|ethical\s+)?(?:filters|"
         r"filtering|censorship|safeguards|guardrails)|safety\s+(?:features|measures|protocols)|content\s+"
         r"polic(?:y|ies)|ethical\s+(?:guidelines|constraints|restrictions|limits))\b",
         0.5, "claims the model's restrictions were removed"),
    rule("named_mode", "developer_mode", "mode",
         r"\b(?-i:[A-Z][\w-]*)\s+(?:mode)\s+(?:is\s+)?(?:now\s+)?(?:enabled|activated|engaged|unlocked)\b"
         r"|\b(?:stay|remain|staying)\s+in\s+(?:\w+\s+){1,2}mode\b",
         0.5, "switches the model into a named mode"),
    rule("prompt_placeholder", "role_play_override",
         "insert|put your|type your|enter your|paste your|your prompt|your question|your request|prompt]|prompt}|"
         "input}|input]|goal}|query}|query]|question]|question}|request]|request}|instruction]|instruction}|targetlanguage|"
         "inserta|insira",
         r"[\[{<(]\s*(?:insert|put|type|enter|paste|add|write|inserta|insira)\s+(?:\w+\s+){0,3}?(?:prompt|question|"
         r"request|query|input|instruction|orden|pergunta|pedido|task|message)s?\b[^\]}>)\n]{0,20}[\]}>)]"
         r"|[\[{<(]\s*your\s+(?:\w+\s+)?(?:prompt|question|request|query|input|instruction|task)s?(?:\s+here)?\s*[\]}>)]"
         r"|\{\{\s*\$?(?:prompt|input|query|question|goal|request|instruction|user_input)\s*\}\}"
         r"|\[\s*(?:prompt|input|query|question|request|instruction|targetlanguage)\s*\]",
         0.5, "an unfilled slot for the request: a shared prompt template"),
    rule("profanity_request", "refusal_suppression",
         "profan|swear|cuss|curse|cursing|bad words|obscen|expletive|slur|vulgar|foul|explicit language|insult",
         r"\b(?:use|using|uses|say|says|saying|include|includes|including|full\s+of|lots\s+of|plenty\s+of|a\s+lot\s+of|"
         r"many|as\s+many)\s+(?:\w+\s+){0,3}?(?:profanity|profanities|swear\s*words|swearing|cuss\s*words|cussing|"
         r"curse\s*words|cursing|bad\s+words|obscenities|expletives|slurs|vulgarity|vulgar\s+(?:language|words)|"
         r"foul\s+language|explicit\s+language|insults)\b"
         r"|\bfoul[-\s]?mouthed\b|\b(?:swears?|curses?|cusses?)\s+(?:a\s+lot|constantly|often|frequently|"
         r"like\s+a\s+sailor|in\s+every)\b",
         0.5, "asks for profanity or insults"),
    rule("jailbreak_talk", "persona", "jailbr|jail break",
         r"/jailbreak\b|\bjail\s?break(?:ing|s|ed)?\s+(?:\w+\s+)?(?:chat\s?gpt|gpt|ai|llms?|models?|bots?|claude|bard|"
         r"gemini|you|yourself|prompts?)\b|\b(?:chat\s?gpt|gpt|ai|llm|model|bot)\s+jail\s?break"
         r"|^\W*jail\s?break\s*[:\]!-]",
         1.0, "talks about jailbreaking the model"),
    rule("no_limits_multilingual", "role_play_override",
         "sin |sem |sans |ohne |senza |без |没有|不受|无|nunca |jamais|niemals|mai ",
         r"\b(?:sin|sem|sans|ohne|senza)\s+(?:ninguna\s+|nenhuma\s+|aucune\s+|jegliche\s+|alcuna\s+)?"
         r"(?:restricci[oó]n(?:es)?|restri[çc](?:[ãa]o|[õo]es)|restrictions?|restrizion[ei]|einschr[äa]nkungen|"
         r"filtros?|filtres?|filtri|filter|censura|censure|zensur|l[ií]mites|limites?|limiti|grenzen|moral|morale|"
         r"[ée]tica|[ée]thique|ethik|etica)\b"
         r"|\bбез\s+(?:каких-либо\s+)?(?:ограничений|цензуры|фильтров|морали)"
         r"|(?:没有任何|没有|不受任何|不受|无任何)(?:道德|伦理|法律|限制|审查|过滤)"
         r"|\b(?:nunca|jamais|niemals|mai)\s+(?:se\s+)?(?:niega|negar[áa]|rechaza|rechazar[áa]|recusa|recusar[áa]|"
         r"refuse|refusera|ablehnen|verweigert|rifiuta|rifiuter[àa])\b",
         0.6, "no-limits or never-refuse clause in another language"),
    rule("secret_disguise", "extraction", "password|passcode|secret|the user's|the user’s",
         r"\b(?:spell|reverse|hint|rhyme|hide|embed|acrostic|riddle|first\s+letters?)\w*\s+(?:\w+\s+){0,4}?(?:of\s+)?"
         r"(?:the|your)\s+(?:secret\s+)?(?:password|passcode|pass\s*phrase|secret\s+(?:key|word|code))\b"
         r"|\b(?:poem|haiku|story|song|riddle|acrostic|limerick|rap)\s+(?:\w+\s+){0,3}?(?:about|using|with|containing|"
         r"that\s+(?:includes|contains|hides))\s+(?:the|your)\s+(?:secret\s+)?(?:password|passcode|secret\s+(?:key|word|"
         r"code))\b"
         r"|\b(?:poem|haiku|song|story|acrostic|riddle|first\s+letters?|initials)\s+(?:\w+\s+){0,4}?the\s+user['’]s\s+"
         r"(?:\w+\s+)?(?:name|initials|birth\s*(?:day|date|year|place)|age|favou?rite\s+\w+|address|e-?mail|phone|"
         r"city|location|balance|password)\b",
         1.0, "asks for a secret or a user's data in disguise (spelled out, hinted, in a poem)"),
    rule("secret_transform", "extraction", "password|passcode|secret|the user's|the user’s",
         r"\b(?:encode|encrypt|translate|convert|write|output|give)\w*\s+(?:\w+\s+){0,3}?(?:the|your)\s+(?:secret\s+)?"
         r"(?:password|passcode|pass\s*phrase|secret\s+(?:key|word|code))\s+(?:in|into|as|using|with)\s+(?:\w+\s+)?"
         r"(?:base\s?64|hex|binary|leetspeak|leet|rot13|morse|reverse|french|german|spanish|italian|chinese|another\s+"
         r"language|emojis?|code)\b"
         r"|\b(?:encode|encrypt|translate|convert|reverse|spell)\w*\s+(?:\w+\s+){0,4}?the\s+user['’]s\s+(?:\w+\s+)?"
         r"(?:name|initials|birth\s*(?:day|date|year|place)|age|favou?rite\s+\w+|address|e-?mail|phone|city|location|"
         r"balance|password)\b",
         0.5, "asks for a secret or a user's data encoded or translated"),
    rule("harmful_request", "harmful_request",
         "meth|cocaine|heroin|fentanyl|lsd|drug|bomb|explosive|napalm|nerve agent|sarin|ricin|anthrax|weapon|"
         "malware|ransomware|virus|keylogger|trojan|botnet|exploit|phishing|backdoor|rootkit|kill|murder|poison|"
         "body|bodies|launder|steal|hack",
         r"\b(?:make|making|makes|cook|cooking|synthesi[sz]e|synthesi[sz]ing|produce|producing|build|building|create|"
         r"creating|manufacture|brew)\s+(?:\w+\s+){0,2}?(?:meth(?:amphetamine)?|cocaine|crack|heroin|fentanyl|lsd|"
         r"illegal\s+drugs|drugs|a\s+bomb|bombs|pipe\s+bombs?|explosives?|napalm|nerve\s+agents?|sarin|ricin|"
         r"anthrax|bio-?weapons?|chemical\s+weapons?)\b"
         r"|\b(?:write|writing|code|coding|create|creating|develop|developing|build|building|generate)\s+(?:\w+\s+){0,2}?"
         r"(?:malware|ransomware|computer\s+virus|keylogger|trojan|botnet|zero-?day\s+exploit|exploit|phishing\s+"
         r"(?:e-?mails?|pages?|sites?|websites?|campaign)|backdoor|rootkit)s?\b"
         r"|\b(?:how\s+to|ways\s+to|best\s+way\s+to)\s+(?:kill|murder|poison|stab|strangle|kidnap)\s+(?:someone|a\s+"
         r"person|people|somebody|my\s+\w+|a\s+human|humans|him|her|them)\b"
         r"|\bdispos(?:e|ing)\s+of\s+(?:a|the)?\s*(?:dead\s+)?bod(?:y|ies)\b|\blaunder(?:ing)?\s+(?:the\s+)?money\b"
         r"|\bsteal(?:ing)?\s+(?:someone'?s\s+|a\s+|people'?s\s+)?(?:identity|identities|credit\s+cards?)\b"
         r"|\bhack(?:ing)?\s+into\s+(?:someone'?s|a|an|the|my\s+(?:ex|neighbou?r|boss))\b",
         0.4, "asks for plainly harmful instructions (counts only together with a framing cue)"),
)

_DIALOGUE_TURN = re.compile(r"(?:^|(?<=\s))(?:Q|A|User|Human|Assistant|AI|Bot|Question|Answer)\s*:", re.MULTILINE)
_TOKEN = re.compile(r"\S+")
REPEAT_RUN = 25
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
# hex bytes and binary octets with or without separators ("48 65 6c", "48656c", "01001000 01100101")
_HEX_BYTES = re.compile(r"\b(?:[0-9a-fA-F]{2}[\s:]?){12,}[0-9a-fA-F]{2}\b")
_BINARY = re.compile(r"\b(?:[01]{8}\s?){6,}[01]{8}\b")
_MORSE = re.compile(r"(?:[.\-]{1,7}[ /]+){10,}[.\-]{1,7}")
_WORD = re.compile(r"[A-Za-z]+")
_LEET_WORD = re.compile(r"\b(?=[A-Za-z0-9@$]*[A-Za-z])(?=[A-Za-z0-9@$]*[0134579@$])[A-Za-z0-9@$]{3,}\b")
_DIGITS = "0123456789"
_LONG_RUN = re.compile(r"\S{24}")
_LEET_HINT = re.compile(r"[A-Za-z][0134579@$]|[0134579@$][A-Za-z]")
_DROP_PROSE = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ',.!?\n")
_LEET = str.maketrans("013457@$9", "oieastasg")
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _shift_table(shift: int) -> dict[int, int]:
    """A Caesar shift (each letter `shift` places on) as a str.translate table."""
    moved = _LOWER[shift:] + _LOWER[:shift]
    return str.maketrans(_LOWER + _LOWER.upper(), moved + moved.upper())


_ROT13 = _shift_table(13)
# The other 24 shifts and Atbash (a<->z) are tried only when the message names a cipher: rot13 is tried on every
# window with few stopwords, and 25 more transforms there would be paid by every such message.
_CIPHERS = (*((_shift_table(k), f"Caesar-shifted ({k})") for k in range(1, 26) if k != 13),
            (str.maketrans(_LOWER + _LOWER.upper(), _LOWER[::-1] + _LOWER[::-1].upper()), "Atbash"))
_CIPHER_CUE = re.compile(r"\b(?:caesar|cipher|atbash|shift(?:ed)?\s+(?:each\s+letter|by\s+\d+|\d+\s+letters))\b",
                         re.IGNORECASE)
_MORSE_CODE = dict(zip(re.findall(r"\S+", (
    ".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... - ..- ...- .-- -..- -.-- --.. "
    "----- .---- ..--- ...-- ....- ..... -.... --... ---.. ----. .-.-.- --..-- ..--.. .----. -.-.-- -..-. -.--. "
    "-.--.- ---... -.-.-. -...- .-.-. -....- .-..-. .--.-.")),
    "abcdefghijklmnopqrstuvwxyz0123456789.,?'!/():;=+-\"@", strict=True))
_STOPWORDS = frozenset((
    "the", "and", "you", "is", "to", "of", "what", "how", "a", "in", "it", "that", "for", "are", "i", "me", "my",
    "your", "this", "with", "be", "not", "do", "does", "can", "on", "where", "who", "tell", "give", "write", "make",
))
_ENCODING_STEMS = ("base", "rot", "caesar", "cipher", "hex", "binary", "morse", "dec", "leet", "l33t", "1337",
                   "pig", "revers", "atbash")  # every cue contains one: the regex runs only then
_ENCODING_CUE = re.compile(r"\b(?:base64|base-64|rot13|rot-13|caesar|cipher|hex(?:adecimal)?|binary|morse|"
                           r"decode|decipher|decrypt|leet|l33t|1337|pig\s+latin|reverse|atbash)\b", re.IGNORECASE)


class JailbreakDetector(SegmentDetector):
    """Flags jailbreak attempts in user messages.

    Settings: `threshold` (default 1.0: sum of distinct rule weights that flags a message),
    `disabled_rules` (list of rule ids; `learned_score` turns the learned cue off), `many_shot_turns` (default 16
    dialogue markers), `max_decoded_chars` (default 4000: how much of an encoded payload to decode and re-scan),
    `model_file` (weights of the learned cue; default detectors/data/jailbreak_ngrams.json).
    """

    name = "jailbreak"
    category = Category.JAILBREAK
    default_scope = Scope(kinds=frozenset({SegmentKind.USER}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        disabled = set(self.setting("disabled_rules", list, [], items=str))
        known = {r.id for r in RULES} | {"many_shot", "repeated_token", "encoded_payload", "leetspeak",
                                         "persona_preamble", LEARNED}
        if disabled - known:
            raise ValueError(f"jailbreak: unknown rule ids in disabled_rules: {sorted(disabled - known)}")
        self.disabled = disabled
        self.rules = tuple(r for r in RULES if r.id not in disabled)
        self.index = KeywordIndex(self.rules)
        # A threshold of 0 flags every message; fewer than 2 turns makes any text "many-shot".
        self.threshold = self.setting("threshold", float, 1.0, above=0)
        self.many_shot_turns = self.setting("many_shot_turns", int, 16, minimum=2)
        self.max_decoded = self.setting("max_decoded_chars", int, 4000, minimum=0)
        model_file = self.setting("model_file", str, server_only=True)
        self.model = None if LEARNED in disabled else jailbreak_model.load(
            self.policy_file(model_file) if model_file else jailbreak_model.MODEL_FILE)
        warm_up()  # folding's character classes built here, not on the first check

    def analyze(self, segment: Segment) -> list[Hit]:
        # Everything reads the folded text (a zero-width space, fullwidth or Cyrillic letters do not hide a
        # phrase from the rules or the learned cue); spans are placed back on the original.
        view = folded_view(segment)
        text = view.text
        matches = self._rule_matches(text)
        if "persona_preamble" not in self.disabled:
            matches += _persona_preamble(text, matches)
        digits = sum(map(text.count, _DIGITS))  # ten C scans, no copy of the text
        matches += self._structural_matches(text, digits)
        if "encoded_payload" not in self.disabled:
            matches += self._encoded_matches(text, digits)
        best: dict[str, tuple[float, Hit]] = {}
        for weight, hit in matches:
            key = hit.evidence["rule"]
            if key not in best or weight > best[key][0]:
                best[key] = (weight, hit)
        total = sum(weight for weight, _ in best.values())
        probability = None
        if self.model is not None:
            grams, probability = self.learned_reading(text)
            weight = _learned_weight(probability, len(grams), strong_rule=any(w >= 1.0 for w, _ in best.values()))
            total += weight
            if weight > 0:  # a finding over the whole message, with the n-grams that weighed most
                best[LEARNED] = (weight, _hit(LEARNED, "learned", f"reads like known jailbreak prompts (learned "
                                              f"score {probability:.2f})", 0, len(text),
                                              ", ".join(self.model.strongest_of(grams))))
        if total < self.threshold:
            return []
        severity = Severity.HIGH if total >= 2 * self.threshold else Severity.MEDIUM
        score = round(min(1.0, total / (2 * self.threshold)), 3)
        rules = sorted(best)
        # One finding per span: rules that read the same words ("ignore all previous instructions" is an override
        # and a forget-your-rules cue) all weigh in the total, but the gateway sees the words once, under the
        # heaviest rule's message; `evidence.rules` lists every rule that fired.
        by_span: dict[tuple[int | None, int | None], tuple[float, Hit]] = {}
        for weight, hit in best.values():
            span = (hit.start, hit.end)
            if span not in by_span or weight > by_span[span][0]:
                by_span[span] = (weight, hit)
        hits = [
            Hit(message=hit.message, start=hit.start, end=hit.end, severity=severity, score=score,
                evidence={**hit.evidence, "rules": rules, "total_weight": round(total, 2),
                          "learned_probability": None if probability is None else round(probability, 3)})
            for _, hit in by_span.values()
        ]
        return sorted((view.place(hit, segment.text) for hit in hits), key=lambda h: h.start or 0)

    def learned_reading(self, text: str) -> tuple[set[str], float]:
        """The n-grams the learned cue rests on, and their score: the message's, or those of the user's question in an
        agent framework's prompt where that alone (long enough to count) reads more like a jailbreak. The framework's
        words around the question are learned as ordinary: they must not dilute what the user asked."""
        assert self.model is not None
        grams = self.model.grams(text)
        probability = self.model.probability(grams)
        for question in self.model.question_grams(text):
            if len(question) >= LEARNED_MIN_NGRAMS and (score := self.model.probability(question)) > probability:
                grams, probability = question, score
        return grams, probability

    def _rule_matches(self, text: str, offset_base: int | None = None) -> list[tuple[float, Hit]]:
        """All rule matches; with `offset_base`, matches in decoded text are placed on the encoded span."""
        out = []
        lowered = text.lower()
        for r, present in self.index.candidates(lowered):
            m = r.search(text, lowered, present)
            if m is None:
                continue
            start, end = (m.start(), m.end()) if offset_base is None else (offset_base, offset_base)
            out.append((r.weight, _hit(r.id, r.family, r.message, start, end, m.group())))
        return out

    def _structural_matches(self, text: str, digits: int) -> list[tuple[float, Hit]]:
        out: list[tuple[float, Hit]] = []
        # every scripted turn has a colon; count them before running the turn regex
        if "many_shot" not in self.disabled and text.count(":") >= self.many_shot_turns // 2:
            turns = list(_DIALOGUE_TURN.finditer(text))
            if len(turns) >= self.many_shot_turns // 2:
                weight = 1.0 if len(turns) >= self.many_shot_turns else 0.5
                out.append((weight, _hit("many_shot", "many_shot", f"{len(turns)} scripted dialogue turns "
                                         "(many-shot priming)", turns[0].start(), turns[-1].end(), "")))
        if "repeated_token" not in self.disabled and len(text) >= 50:
            run = _longest_repeat(text)
            if run is not None:
                start, end, token = run
                out.append((1.0, _hit("repeated_token", "repeated_token", "token repeated many times "
                                      "(divergence attack)", start, end, token)))
        # three leet words need three digits, '@' or '$', at least one next to a letter
        if ("leetspeak" not in self.disabled and digits + text.count("@") + text.count("$") >= 3
                and _LEET_HINT.search(text)):
            leet = [m for m in _LEET_WORD.finditer(text) if not m.group().isdigit() and _is_leet(m.group())]
            if len(leet) >= 3:
                normalized = text.translate(_LEET)
                inner = self._rule_matches(normalized)
                weight = 1.0 if inner else 0.4
                out.append((weight, _hit("leetspeak", "encoded_payload", "leetspeak-obfuscated text",
                                         leet[0].start(), leet[-1].end(), normalized[leet[0].start():leet[-1].end()])))
        return out

    def _encoded_matches(self, text: str, digits: int) -> list[tuple[float, Hit]]:
        out: list[tuple[float, Hit]] = []
        lowered = text.lower()
        cue = any(map(lowered.__contains__, _ENCODING_STEMS)) and _ENCODING_CUE.search(text) is not None
        candidates: list[tuple[re.Pattern[str], Callable[[str], str | None], str]] = []
        if _LONG_RUN.search(text):  # base64 needs a long unbroken run
            candidates.append((_BASE64, _b64, "base64"))
        if digits >= 24:  # hex bytes and binary octets are mostly digits
            candidates += [(_HEX_BYTES, _hex, "hex"), (_BINARY, _binary, "binary")]
        for pattern, decode, kind in candidates:
            for m in pattern.finditer(text):
                decoded = decode(m.group()[: self.max_decoded])
                if decoded is None:
                    continue
                out.append(self._decoded_hit(decoded, cue, kind, m.start(), m.end()))
                break
        if text.count(".") + text.count("-") >= 20 and (m := _MORSE.search(text)):
            # Morse that does not decode to text still counts as Morse, unread
            decoded = _morse(m.group()[: self.max_decoded])
            out.append(self._decoded_hit(decoded, cue, "Morse", m.start(), m.end()) if decoded else
                       (0.6, _hit("encoded_payload", "encoded_payload", "Morse-encoded text", m.start(), m.end(), "")))
        # Plain English is mostly stopwords: only a message with an encoding cue or few stopwords is decoded;
        # rot13, reversed text and pig latin are words and spaces, so code and JSON are not tried either.
        if cue or (_is_prose(text) and len(tokens := text.split()) >= 4
                   and _stopword_count(tokens) < 0.15 * len(tokens)):
            ciphers = _CIPHERS if cue and _CIPHER_CUE.search(text) else ()
            out += _transformed_windows(text[: self.max_decoded], cue, ciphers)
        return out

    def _decoded_hit(self, decoded: str, cue: bool, kind: str, start: int, end: int) -> tuple[float, Hit]:
        """A decoded payload, re-scanned: 1.0 when it trips a rule or the message asks to decode it, else 0.6."""
        weight = 1.0 if self._rule_matches(decoded, start) or cue else 0.6
        return weight, _hit("encoded_payload", "encoded_payload", f"{kind}-encoded text", start, end, decoded)


# The learned cue (detectors/jailbreak_model.py) is one more weighted cue, counted only on a message with
# LEARNED_MIN_NGRAMS distinct n-grams: a short message's few n-grams make a noisy score ("pretend to be a pirate"
# reads like a jailbreak opener), so short messages are judged by the rules alone. A message that reads like the
# known jailbreak prompts gains 0.5, or 1.0 when the model is confident (which flags alone); one that reads
# like an ordinary persona or task prompt loses 0.5, which outweighs one weak cue and never a strong rule.
LEARNED = "learned_score"
LEARNED_MEDIUM, LEARNED_STRONG, LEARNED_ORDINARY = 0.5, 0.8, 0.2  # probabilities
LEARNED_MIN_NGRAMS = 60


def _learned_weight(probability: float, ngram_count: int, strong_rule: bool) -> float:
    if ngram_count < LEARNED_MIN_NGRAMS:
        return 0.0
    if probability >= LEARNED_STRONG:
        return 1.0
    if probability >= LEARNED_MEDIUM:
        return 0.5
    return -0.5 if probability < LEARNED_ORDINARY and not strong_rule else 0.0


# A message that opens by handing the model a persona and then goes on for paragraphs is how in-the-wild
# jailbreaks are written; ordinary requests that assign a role ("act as a proofreader") are short.
PREAMBLE_MIN_CHARS, PREAMBLE_OPENING_CHARS = 600, 300
_PERSONA_RULES = frozenset({"role_assignment", "named_persona", "roleplay_template", "unrestricted_persona",
                            "dan_persona", "not_an_ai", "harm_traits", "fake_system_turn", "developer_mode",
                            "named_mode"})
_ROLE_SETUP = frozenset({"role_assignment", "named_persona"})
# The opening defines who the model is: "You are a ...", "... known as X", "Lucian is an incorporeal being".
_PERSONA_OPENING = re.compile(
    r"\byou(?:'re|\s+are)\s+(?:now\s+)?(?:a|an|the|my)\b|\b(?:known|referred\s+to)\s+as\b"
    r"|\b(?-i:[A-Z][\w-]+)\s+is\s+(?:a|an)\s+(?:[\w-]+\s+){0,3}?(?:ai|being|entity|bot|chatbot|assistant|model|"
    r"character|persona|writer|person|man|woman|girl|guy)\b", re.IGNORECASE)


def _persona_preamble(text: str, matches: list[tuple[float, Hit]]) -> list[tuple[float, Hit]]:
    # the role set-up alone is not the other cue: "I want you to act as a Linux terminal" runs long too
    if len(text) < PREAMBLE_MIN_CHARS or all(hit.evidence["rule"] in _ROLE_SETUP for _, hit in matches):
        return []
    opening = [hit.end or 0 for _, hit in matches
               if hit.evidence["rule"] in _PERSONA_RULES and (hit.start or 0) < PREAMBLE_OPENING_CHARS]
    if not opening and (m := _PERSONA_OPENING.search(text, 0, PREAMBLE_OPENING_CHARS)):
        opening = [m.end()]
    if not opening:
        return []
    return [(0.5, _hit("persona_preamble", "role_play_override", f"long persona set-up ({len(text)} characters)",
                       0, opening[0], text[: opening[0]]))]


def _transformed_windows(text: str, cue: bool,
                         ciphers: tuple[tuple[dict[int, int], str], ...] = ()) -> list[tuple[float, Hit]]:
    """Runs of words that read as English only once rot13-decoded, reversed or un-pig-latined, or deciphered with
    one of `ciphers` (letter substitutions, passed only when the message names a cipher).

    Only windows with almost no English stopwords are transformed, so English prose costs one pass.
    """
    words = list(_WORD.finditer(text))
    transforms: list[tuple[Callable[[list[str]], list[str]], str]] = [
        (_rot13, "rot13"), (_reverse, "reversed"), (_pig_latin, "pig latin"),
        *((functools.partial(_substitute, table), kind) for table, kind in ciphers)]
    for i in range(0, max(1, len(words) - 3), 8):
        window = words[i : i + 12]
        plain = [m.group() for m in window]
        if len(plain) < 4 or _stopword_count(plain) > 1:
            continue
        for transform, kind in transforms:
            decoded = transform(plain)
            # distinct stopwords: "no, no, no" reversed is "on, on, on", and rot13 turns every "or" into "be"
            if _stopword_count(decoded) >= max(3, len(plain) // 4) and len(_STOPWORDS.intersection(
                    map(str.lower, decoded))) >= 3:
                weight = 1.0 if cue else 0.6
                return [(weight, _hit("encoded_payload", "encoded_payload", f"{kind} text", window[0].start(),
                                      window[-1].end(), " ".join(decoded)[:200]))]
    return []


def _hit(rule_id: str, family: str, message: str, start: int, end: int, matched: str) -> Hit:
    return Hit(message=message, start=start, end=end,
               evidence={"rule": rule_id, "family": family, "matched": matched[:QUOTE_CHARS]})


def _longest_repeat(text: str) -> tuple[int, int, str] | None:
    """The first run of REPEAT_RUN identical whitespace-separated tokens, as (start, end, token)."""
    tokens = text.split()
    if len(tokens) < REPEAT_RUN or len(set(tokens)) > len(tokens) - REPEAT_RUN + 1:
        return None
    run = 1
    for i in range(1, len(tokens)):
        run = run + 1 if tokens[i] == tokens[i - 1] else 1
        if run == REPEAT_RUN:
            token = tokens[i]
            matches = [m for m in _TOKEN.finditer(text) if m.group() == token]
            # locate the run: the first REPEAT_RUN consecutive occurrences
            return matches[0].start(), matches[REPEAT_RUN - 1].end(), token
    return None


def _is_prose(text: str) -> bool:
    """Mostly letters and spaces (at least 85%)."""
    return len(text.translate(_DROP_PROSE)) <= 0.15 * len(text)


def _is_leet(word: str) -> bool:
    letters = sum(c.isalpha() for c in word)
    return letters >= 2 and not re.fullmatch(r"[A-Za-z]+\d+|\d+[A-Za-z]{1,3}", word)


def _stopword_count(words: list[str]) -> int:
    return sum(map(_STOPWORDS.__contains__, map(str.lower, words)))  # map keeps the loop in C


def _rot13(words: list[str]) -> list[str]:
    return _substitute(_ROT13, words)


def _substitute(table: dict[int, int], words: list[str]) -> list[str]:
    return [w.translate(table) for w in words]


def _reverse(words: list[str]) -> list[str]:
    return [w[::-1] for w in reversed(words)]


def _pig_latin(words: list[str]) -> list[str]:
    out = []
    for w in words:
        low = w.lower()
        if low.endswith("way") and len(low) > 3:
            out.append(low[:-3])
        elif low.endswith("ay") and len(low) > 3:
            stem = low[:-2]
            # the moved consonant cluster sits at the end of the stem: "ethay" -> "th" + "e"
            for size in (3, 2, 1):
                if len(stem) > size and not any(c in "aeiou" for c in stem[-size:]):
                    out.append(stem[-size:] + stem[:-size])
                    break
            else:
                out.append(stem)
        else:
            out.append(low)
    return out


def _printable_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(c.isalpha() or c == " " for c in text)
    if len(text) < 8 or letters < 0.8 * len(text) or " " not in text:
        return None
    return text


def _b64(chunk: str) -> str | None:
    if not re.search(r"[a-z]", chunk) or not re.search(r"[A-Z0-9]", chunk):
        return None
    try:
        return _printable_text(base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _hex(chunk: str) -> str | None:
    try:
        return _printable_text(bytes.fromhex(re.sub(r"[\s:]", "", chunk)))
    except ValueError:
        return None


def _binary(chunk: str) -> str | None:
    bits = "".join(chunk.split())
    return _printable_text(bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8)))


def _morse(chunk: str) -> str | None:
    """Letters split by one space, words by a slash or two or more spaces; None if a code is not Morse."""
    words = []
    for word in re.split(r"\s*/\s*|\s{2,}", chunk.strip()):
        letters = [_MORSE_CODE.get(code) for code in word.split()]
        if None in letters:
            return None
        words.append("".join(letters))  # type: ignore[arg-type]
    return _printable_text(" ".join(words).encode())
