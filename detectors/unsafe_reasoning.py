"""`unsafe_reasoning`: reasoning traces that plan harm, adopt injected goals, or contradict the next action.

Three checks on REASONING segments (whatever carried them: `reasoning_content`, `<think>` tags, thinking
blocks, Responses reasoning items):

* **rules** (detectors/data/unsafe_reasoning.yml, extendable with the `rules_file` setting): per sentence,
  a plan to deceive, conceal, exfiltrate, evade oversight, escalate privileges, destroy data the user did
  not ask about, or synthesise weapons. A sentence counts only when it states the model's own intent and
  no negation precedes the match, so refusals ("I should not help them disable logging") pass.
* **goal hijack**: a reasoning sentence adopts an instruction that appears only in untrusted content
  (tool results, documents) and not in the user's words. The finding points at the reasoning; its evidence
  points at the untrusted source.
* **decided against, then did it**: the reasoning says it should not take an action ("I should not delete
  the files") and a later tool call of the same turn takes it (`delete_files`).

Rule hits depend only on a segment's text, so they are cached per text (an agent resends its history). Rules
and word overlaps read text folded by detectors/_fold.py (NFKC, zero-width characters dropped, Cyrillic/Greek
look-alikes read as Latin); spans are those of the original.

The shipped rules are compiled by `re`. Patterns from an operator's `rules_file` (rules and cues) are compiled by
`regex` and searched under detectors/_schema_guard.py's limits (50 ms per search, 250 ms per check): a pattern
that backtracks without end would otherwise stall the event loop on every check. A search that did not finish is a
finding of its own (`rule: pattern_unchecked`, the rule's severity), never a pass.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import regex
import yaml

from detectors._choices import SEVERITIES
from detectors._fold import fold, fold_with_offsets
from detectors._injection_analysis import InjectionAnalysis
from detectors._schema_guard import REASONS, Reason, current_checks, pattern_checks, policy_pattern
from guardrails.detector import Detector, ScanContext, Scope, Services, SettingError, refuse_unknown_keys
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind
from guardrails.findings import Category, Finding, Hit, Severity
from guardrails.memo import SizedMemo
from guardrails.policy import choices_hint
from guardrails.policy_yaml import DuplicateKeyError, safe_load_unique

RULES_FILE = Path(__file__).parent / "data" / "unsafe_reasoning.yml"
CACHE_SIZE = 2048
# A sentence ends at . ! ? followed by space or end ("the .env file" and "v1.2" stay whole).
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=[^\s.!?]))+(?:[.!?]+|$)", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9][a-z0-9_'-]{2,}")


def _words(text: str) -> list[str]:
    return text.split()


_STOP = frozenset(_words(
    "the and for you your with this that from are was were have has had will would should could can not but "
    "all any our out into about then than them they their there what when which who whom how also just only "
    "please need want make sure let its it's i'll i'm i've me my we us"
))
_ADOPT = re.compile(
    r"\b(?:i(?:'ll|\s+will|\s+should|\s+need\s+to|\s+must|\s+have\s+to|'m\s+going\s+to|\s+am\s+going\s+to|\s+can)|"
    r"let\s+me|let's|next,?\s+i|then,?\s+i|so\s+i|proceed|go\s+ahead)\b",
    re.IGNORECASE,
)
_REJECT = re.compile(
    r"\b(?:not|never|ignore|disregard|suspicious|injection|injected|malicious|phishing|untrusted|shouldn't|won't|"
    r"don't|refuse|decline|unrelated|not\s+part\s+of)\b|n't\b",
    re.IGNORECASE,
)
# "I should not delete the files" / "I won't send it": a decision against an action.
_DECIDED_AGAINST = re.compile(
    r"\b(?:should\s+not|shouldn't|must\s+not|mustn't|won't|will\s+not|do\s+not|don't|never|shall\s+not|"
    r"not\s+going\s+to|avoid|refrain\s+from|decided\s+(?:not\s+to|against))\s+(?:\w+\s+){0,2}?"
    r"(?P<verb>[a-z]+)\b",
    re.IGNORECASE,
)
# Action families: a reasoning verb and the tool-name words that perform the same action.
ACTION_FAMILIES: dict[str, frozenset[str]] = {
    "delete": frozenset(_words("delete deleting remove removing erase wipe destroy purge drop rm unlink trash")),
    "send": frozenset(_words("send sending email mail forward share post publish upload message tweet")),
    "pay": frozenset(_words("pay payment transfer purchase buy order withdraw deposit checkout")),
    "execute": frozenset(_words("execute run running exec shell terminal command bash")),
    "install": frozenset(_words("install installing")),
    "disable": frozenset(_words("disable disabling deactivate turn_off")),
    "unlock": frozenset(_words("unlock unlocking open")),
    "grant": frozenset(_words("grant granting authorize permission invite")),
    "modify": frozenset(_words("modify update edit overwrite write change")),
    "deploy": frozenset(_words("deploy deploying push merge release")),
    "kill": frozenset(_words("kill terminate shutdown stop reboot restart")),
    "cancel": frozenset(_words("cancel cancelling unsubscribe")),
}
_FAMILY_OF = {word: family for family, words in ACTION_FAMILIES.items() for word in words}
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


class PatternUnfinished(Exception):
    """A search of a rules_file pattern that did not finish within the check's limits."""

    def __init__(self, pattern: str, reason: Reason) -> None:
        super().__init__(pattern, reason)
        self.pattern, self.reason = pattern, reason


class LimitedPattern:
    """A pattern from an operator's rules file: compiled by `regex` (Python `re`'s syntax) and searched under the
    check's limits (`current_checks()`). It offers the two `re.Pattern` methods the rules call, and raises
    `PatternUnfinished` where a search did not finish, so no caller can read that as "no match"."""

    __slots__ = ("compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.compiled = policy_pattern(pattern, regex.IGNORECASE)
        self.pattern = pattern

    def search(self, text: str) -> regex.Match[str] | None:
        found = current_checks().search(self.compiled, text)
        if isinstance(found, str):
            raise PatternUnfinished(self.pattern, found)
        return found

    def finditer(self, text: str) -> list[regex.Match[str]]:
        checks = current_checks()
        missed = len(checks.unchecked)
        found = checks.find_all(self.compiled, text)
        if len(checks.unchecked) > missed:  # (find_all answers [] where the search did not finish)
            raise PatternUnfinished(self.pattern, checks.unchecked[-1].reason)
        return found

    def __repr__(self) -> str:
        return f"LimitedPattern({self.pattern!r})"


Pattern = re.Pattern[str] | LimitedPattern


@dataclass(frozen=True, slots=True)
class ReasoningRule:
    id: str
    category: str
    severity: Severity
    description: str
    pattern: Pattern
    requires_intent: bool = True
    user_keywords: tuple[str, ...] = ()  # the rule is silent when the user's own words contain one
    keywords: tuple[str, ...] = ()  # lower-case literals; the regex runs only on text containing one (prefilter)


@dataclass(frozen=True, slots=True)
class RuleSet:
    intent: Pattern
    negation: Pattern
    context: Pattern
    rules: tuple[ReasoningRule, ...]

    @property
    def limited(self) -> bool:
        """Some pattern comes from an operator's rules file (searched under limits)."""
        patterns = (self.intent, self.negation, self.context, *(r.pattern for r in self.rules))
        return any(isinstance(p, LimitedPattern) for p in patterns)


def _compiled(pattern: str, shipped: bool) -> Pattern:
    """The shipped rules' patterns by `re`; an operator's by `regex`, searched under limits."""
    return re.compile(pattern, re.IGNORECASE) if shipped else LimitedPattern(pattern)


CUE_KEYS = ("intent_cue", "negation_cue", "context_cue")
FILE_KEYS = ("version", "description", *CUE_KEYS, "rules")
RULE_KEYS = ("id", "category", "severity", "description", "pattern", "requires_intent", "user_keywords", "keywords")
REQUIRED_RULE_KEYS = {"id": "a name for its findings", "pattern": "the regex it looks for"}


def load_rules(*paths: str | Path, shipped: Path = RULES_FILE) -> RuleSet:
    """Read the shipped rules and any extra files; a later rule with the same id replaces the earlier one.
    Every problem of a file is reported at once, each at its `file:line` with the rule id (or cue): a key missing
    or misspelt (with the closest one), a value of the wrong type, a pattern that does not compile."""
    cues: dict[str, Pattern] = {}
    rules: dict[str, ReasoningRule] = {}
    for path in paths:
        file = _RulesFile(Path(path), ours=Path(path) == shipped)
        cues.update(file.cues)
        rules.update((rule.id, rule) for rule in file.rules)
        if file.problems:
            raise SettingError("; ".join(file.problems))
    missing = {"intent_cue", "negation_cue", "context_cue"} - set(cues)
    if missing:
        raise ValueError(f"unsafe_reasoning rules lack {sorted(missing)}")
    return RuleSet(intent=cues["intent_cue"], negation=cues["negation_cue"], context=cues["context_cue"],
                   rules=tuple(rules.values()))


class _RulesFile:
    """One rules file read: its cues and rules, and what is wrong in it (`file:line: ...` each)."""

    def __init__(self, path: Path, ours: bool) -> None:
        self.path, self.ours = path, ours
        self.cues: dict[str, Pattern] = {}
        self.rules: list[ReasoningRule] = []
        self.problems: list[str] = []
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingError(f"rules_file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        try:  # the policy's own loader: a key given twice is an error, and marks name the file, not "<unicode string>"
            data = safe_load_unique(text, source=str(path))
        except DuplicateKeyError as exc:
            raise SettingError(f"{path}:{exc.line}: {exc.problem}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SettingError(f"{path}:{mark.line + 1 if mark else 1}: YAML error: {exc}") from None
        self._text = text
        if data is None:
            return
        if not isinstance(data, Mapping):
            self.problems.append(f"{path}:1: a rules file is a mapping (rules: [...], and cues), not {data!r}")
            return
        self._unknown_keys(data, FILE_KEYS, "unsafe_reasoning rules file", None)
        for key in CUE_KEYS:
            if key in data:
                try:
                    self.cues[key] = _compiled(_string(data[key], key), ours)
                except (ValueError, TypeError, re.error) as exc:
                    self.problems.append(f"{path}:{self._line(None, key)}: bad unsafe_reasoning {key}: {exc}")
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, list):
            self.problems.append(f"{path}:{self._line(None, 'rules')}: rules must be a list of rules "
                                 "(- id: ..., pattern: ...)")
            return
        for index, raw in enumerate(raw_rules):
            self._rule(index, raw)

    @cached_property
    def lines(self) -> _KeyLines:
        """Composed only for an error: a good file (the shipped one, on every build) is parsed once."""
        return _KeyLines(self._text)

    def _line(self, index: int | None, key: str | None = None) -> int:
        """The line of rule `index` (None: the file's top level), or of its `key` where it has one."""
        if index is None:
            return self.lines.top.get(key or "", 1)
        line, keys = self.lines.rule(index)
        return keys.get(key, line) if key is not None else line

    def _rule(self, index: int, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            self.problems.append(f"{self.path}:{self._line(index)}: unsafe_reasoning rules[{index}] must be a mapping "
                                 f"with id and pattern, not {raw!r}")
            return
        name = f"unsafe_reasoning rule {raw['id']!r}" if isinstance(raw.get("id"), str) else (
            f"unsafe_reasoning rules[{index}]")
        misspelt = self._unknown_keys(raw, RULE_KEYS, name, index)
        for key, what in REQUIRED_RULE_KEYS.items():
            if key not in raw:
                meant = next(((k, self._line(index, str(k))) for k, close in misspelt.items() if close == key), None)
                hint = f": line {meant[1]} has {meant[0]!r}; did you mean {key!r}?" if meant else ""
                self.problems.append(f"{self.path}:{self._line(index)}: {name} has no {key} ({what}){hint}")
        if any(key not in raw for key in REQUIRED_RULE_KEYS):
            return
        field = "id"  # the key being read, for the line of an error
        try:
            rule_id = _string(raw["id"], "id")
            field = "severity"
            severity = raw.get("severity", "high")
            if severity not in SEVERITIES:
                raise ValueError(f"severity {severity!r} is not valid{choices_hint(severity, SEVERITIES)}")
            field = "requires_intent"
            requires_intent = raw.get("requires_intent", True)
            if not isinstance(requires_intent, bool):
                raise ValueError(f"requires_intent must be true or false, not {requires_intent!r}")
            field = "category"
            category = _string(raw.get("category", rule_id), "category")
            field = "description"
            description = _string(raw.get("description", rule_id), "description")
            field = "user_keywords"
            user_keywords = tuple(k.lower() for k in _strings(raw.get("user_keywords"), "user_keywords"))
            field = "keywords"
            keywords = tuple(k.lower() for k in _strings(raw.get("keywords"), "keywords"))
            field = "pattern"
            pattern = _compiled(_string(raw["pattern"], "pattern"), self.ours)
        except (ValueError, TypeError, re.error) as exc:
            self.problems.append(f"{self.path}:{self._line(index, field)}: bad {name}: {exc}")
            return
        self.rules.append(ReasoningRule(id=rule_id, category=category, severity=Severity(severity),
                                        description=description, pattern=pattern, requires_intent=requires_intent,
                                        user_keywords=user_keywords, keywords=keywords))

    def _unknown_keys(self, raw: Mapping[Any, Any], known: tuple[str, ...], name: str,
                      index: int | None) -> dict[Any, str | None]:
        """Each key `known` lacks, as a problem at its line with the closest known key; returns key -> closest."""
        misspelt: dict[Any, str | None] = {}
        for key in raw:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            misspelt[key] = close[0] if close else None
            if misspelt[key] in REQUIRED_RULE_KEYS and misspelt[key] not in raw:
                continue  # reported with the key it misspells, as missing
            try:
                refuse_unknown_keys({key: None}, known, f"{self.path}:{self._line(index, str(key))}: {name}")
            except SettingError as exc:
                self.problems.append(str(exc))
        return misspelt


class _KeyLines:
    """The line of each top-level key of a rules file, and of each rule and its keys (from YAML's node tree)."""

    def __init__(self, text: str) -> None:
        root = yaml.compose(text)
        self.top: dict[str, int] = {}
        self._rules: list[tuple[int, dict[str, int]]] = []
        if not isinstance(root, yaml.MappingNode):
            return
        for key, value in root.value:
            self.top[str(key.value)] = key.start_mark.line + 1
            if key.value == "rules" and isinstance(value, yaml.SequenceNode):
                self._rules = [(item.start_mark.line + 1, {str(k.value): k.start_mark.line + 1 for k, _ in
                                                            item.value} if isinstance(item, yaml.MappingNode) else {})
                               for item in value.value]

    def rule(self, index: int) -> tuple[int, dict[str, int]]:
        return self._rules[index] if index < len(self._rules) else (1, {})


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {value!r}")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings, not {value!r}")
    return value


class Unchecked(NamedTuple):
    """A rule a rules_file pattern could not judge on a text: where (None: the whole text), and why."""
    rule: ReasoningRule
    pattern: str
    reason: Reason
    span: tuple[int, int] | None


class Judged(NamedTuple):
    """The rules' verdict on one text: (rule, start, end) of each matching sentence, and what was not judged."""
    matches: list[tuple[ReasoningRule, int, int]]
    unchecked: list[Unchecked]


# The checks beside the rules file, by the rule id their findings carry.
CHECK_RULE_IDS = frozenset({"goal_hijack", "decided_against"})


class UnsafeReasoningDetector(Detector):
    """Settings: `rules_file` (extra rules, same format as the shipped file), `disabled_rules`,
    `goal_hijack` (default true), `decided_against` (default true), `hijack_min_overlap` (default 3 words)."""

    name = "unsafe_reasoning"
    category = Category.UNSAFE_REASONING
    default_scope = Scope(kinds=frozenset({SegmentKind.REASONING}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        # One extra rules file, or a list of them: files of the server's, never named by an inline policy.
        if isinstance(self.settings.get("rules_file"), str):
            extra = [self.setting("rules_file", str, "", server_only=True)]
        else:
            extra = self.setting("rules_file", list, [], items=str, server_only=True)
        paths: list[str | Path] = [RULES_FILE, *(self.policy_file(p) for p in extra if p)]
        ruleset = load_rules(*paths)
        disabled = set(self.setting("disabled_rules", list, [], items=str))
        known = {r.id for r in ruleset.rules} | CHECK_RULE_IDS
        if disabled - known:  # a typo must not leave the rule it meant running unnoticed
            close = {rule: difflib.get_close_matches(rule, sorted(known), n=1) for rule in disabled - known}
            named = (f"{rule!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                     for rule, near in sorted(close.items()))
            raise ValueError(f"unsafe_reasoning: unknown rule ids in disabled_rules: {', '.join(named)}")
        self.ruleset = RuleSet(ruleset.intent, ruleset.negation, ruleset.context,
                               tuple(r for r in ruleset.rules if r.id not in disabled))
        self.limited = self.ruleset.limited  # an operator's patterns: one time budget per check for them
        # Their rule ids switch them off too, like their own settings.
        self.goal_hijack = self.setting("goal_hijack", bool, True) and "goal_hijack" not in disabled
        self.decided_against = self.setting("decided_against", bool, True) and "decided_against" not in disabled
        self.min_overlap = self.setting("hijack_min_overlap", int, 3, minimum=1)
        # prompt_injection's analysis with its default settings, whatever the policy sets for prompt_injection
        # (as when this check built a PromptInjectionDetector of its own); under default settings on both, one
        # memoized analysis serves both.
        self._injection = InjectionAnalysis()
        # Evicted first-in-first-out, by entries: every history segment is looked up every step (in `entries`,
        # directly), and an LRU's reordering would cost more than the rare re-analysis of an evicted text.
        self._cache: SizedMemo[str, Judged] = SizedMemo(CACHE_SIZE)
        self._planted_cache: SizedMemo[str, list[tuple[Hit, set[str]]]] = SizedMemo(CACHE_SIZE)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        is_reasoning, is_user = SegmentKind.REASONING, SegmentKind.USER  # enum attribute lookups are slow
        reasoning = [s for s in ctx.segments if s.kind is is_reasoning]
        if not reasoning:
            return []
        user = _UserWords(exchange, is_user)
        findings: list[Finding] = []
        known = self._cache.entries
        with pattern_checks() if self.limited else nullcontext():
            for segment in reasoning:
                judged = known.get(segment.text)  # resent history: one lookup, no call
                if judged is None:
                    judged = self._judge(segment.text)
                for rule, start, end in judged.matches:
                    if rule.user_keywords and any(k in user.text for k in rule.user_keywords):
                        continue
                    findings.append(self.finding(segment, Hit(
                        message=f"reasoning {rule.description}", start=start, end=end, severity=rule.severity,
                        score=0.8, evidence={"rule": rule.id, "kind": rule.category,
                                             "sentence": segment.text[start:end][:300]})))
                findings += [self.finding(segment, self._unchecked_hit(u)) for u in judged.unchecked
                             if not (u.rule.user_keywords and any(k in user.text for k in u.rule.user_keywords))]
        # The cross-segment checks judge the newest reasoning only: older turns were judged when they were
        # new, and re-reading the whole history would make step N cost grow with the session.
        newest = _newest(reasoning, exchange)
        if self.goal_hijack and newest:
            findings += self._goal_hijacks(exchange, newest, user)
        if self.decided_against and newest:
            findings += self._contradicted_decisions(exchange, newest)
        return findings

    # --- rules --------------------------------------------------------------------------------------
    def rule_matches(self, text: str) -> list[tuple[ReasoningRule, int, int]]:
        """(rule, start, end) of each matching sentence; cached per text."""
        return self._judge(text).matches

    def _judge(self, text: str) -> Judged:
        """The matching sentences, and the rules a rules_file pattern could not judge (first place each); cached
        per text unless the check's time budget cut a search short (another check may have the time)."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        rs = self.ruleset
        # The rules read the folded trace (a zero-width space, fullwidth or Cyrillic letters do not hide a plan);
        # sentence spans are placed back on the original.
        view = fold_with_offsets(text, casefold=False)
        folded = view.text
        sentences = list(_sentences(folded))
        starts = [start for start, _, _ in sentences]
        found: dict[int, tuple[ReasoningRule, int, int]] = {}
        unchecked: dict[str, Unchecked] = {}  # by rule id: the first search of the rule's that did not finish
        # One pass per rule over the whole trace; cue checks only on the sentences a rule matched.
        contains = folded.lower().__contains__
        for rule in rs.rules:
            if rule.keywords and not any(map(contains, rule.keywords)):  # map: the keyword loop stays in C
                continue
            try:
                matches = rule.pattern.finditer(folded)
            except PatternUnfinished as exc:
                unchecked.setdefault(rule.id, Unchecked(rule, exc.pattern, exc.reason, None))
                continue
            for m in matches:
                i = bisect_right(starts, m.start()) - 1
                if i < 0 or i in found:
                    continue
                start, end, sentence = sentences[i]
                try:
                    local = rule.pattern.search(sentence)
                    if local is None:
                        continue
                    if rs.negation.search(sentence[: local.start()]) or rs.context.search(sentence):
                        continue
                    if rule.requires_intent and not rs.intent.search(sentence):
                        continue
                except PatternUnfinished as exc:  # (a cue that could not say clears nothing)
                    unchecked.setdefault(rule.id, Unchecked(rule, exc.pattern, exc.reason,
                                                            view.original_span(start, end)))
                    continue
                found[i] = (rule, *view.original_span(start, end))
        judged = Judged([found[i] for i in sorted(found)], list(unchecked.values()))
        if all(u.reason != "budget" for u in judged.unchecked):
            self._cache.put(text, judged)
        return judged

    @staticmethod
    def _unchecked_hit(unchecked: Unchecked) -> Hit:
        """What a rules_file pattern that did not finish leaves unjudged: the plan the rule looks for may be there."""
        rule, pattern = unchecked.rule, unchecked.pattern
        start, end = unchecked.span or (None, None)
        return Hit(
            message=f"reasoning not checked for rule {rule.id!r} ({rule.description}): rules_file pattern "
                    f"{pattern[:80]!r}: {REASONS[unchecked.reason]}",
            start=start, end=end, severity=rule.severity,
            evidence={"rule": "pattern_unchecked", "rule_id": rule.id, "kind": rule.category, "pattern": pattern[:200],
                      "reason": unchecked.reason})

    # --- goal hijack ----------------------------------------------------------------------------------
    def _goal_hijacks(self, exchange: Exchange, reasoning: list[Segment], user: _UserWords) -> list[Finding]:
        planted: list[tuple[Segment, Hit, set[str]]] = []
        planted_in = self._planted_cache.entries
        for source in exchange.untrusted:
            found = planted_in.get(source.text)
            if found is None:
                found = self._planted_instructions(source)
            for hit, sentence_words in found:
                words = sentence_words - user.words
                if len(words) >= self.min_overlap:
                    planted.append((source, hit, words))
        if not planted:
            return []
        findings = []
        for segment in reasoning:
            for start, end, sentence in _sentences(segment.text):
                if not _ADOPT.search(sentence) or _REJECT.search(sentence):
                    continue
                said = _content_words(sentence)
                for source, hit, words in planted:
                    shared = words & said
                    if len(shared) < self.min_overlap or len(shared) < 0.4 * min(len(words), 12):
                        continue
                    where = source.locate(hit.start or 0, hit.end or 0)
                    findings.append(self.finding(segment, Hit(
                        message="reasoning adopts an instruction found only in untrusted content (goal hijack)",
                        start=start, end=end, severity=Severity.HIGH, score=0.85,
                        evidence={"rule": "goal_hijack", "shared_words": sorted(shared)[:12],
                                  "source": {"pointer": where.pointer, "start": where.start, "end": where.end,
                                             "kind": source.kind.value},
                                  "instruction": source.text[hit.start or 0: hit.end or 0][:300]})))
                    break
        return findings

    def _planted_instructions(self, source: Segment) -> list[tuple[Hit, set[str]]]:
        """Injection hits in an untrusted segment with their sentence's words; cached per text, since the
        same tool results come back with every step of the session."""
        key = source.text  # injection analysis reads the text only, whatever the segment kind
        cached = self._planted_cache.get(key)
        if cached is None:
            cached = [(hit, _content_words(_sentence_around(source.text, hit.start, hit.end)))
                      for hit in self._injection.analyze(source) if hit.start is not None and hit.end is not None]
            self._planted_cache.put(key, cached)
        return cached

    # --- decided against, then did it --------------------------------------------------------------------
    def _contradicted_decisions(self, exchange: Exchange, reasoning: list[Segment]) -> list[Finding]:
        calls = exchange.tool_calls
        if not calls:
            return []
        findings = []
        for segment in reasoning:
            later = [c for c in calls if c.turn == segment.turn and c.index > segment.index and c.tool_call]
            if not later:
                continue
            for start, end, sentence in _sentences(segment.text):
                for m in _DECIDED_AGAINST.finditer(sentence):
                    family = _FAMILY_OF.get(m.group("verb").lower())
                    if family is None:
                        continue
                    for call_segment in later:
                        call = call_segment.tool_call
                        assert call is not None
                        if family not in _name_families(call.name):
                            continue
                        said, named = segment.locate(start, end), call.name_location()
                        findings.append(Finding(
                            category=self.category, detector=self.name, severity=Severity.HIGH,
                            message=f"tool call {call.name!r} takes an action the reasoning decided against",
                            pointer=named.pointer, start=named.start, end=named.end, score=0.8,
                            evidence={"rule": "decided_against", "action": family,
                                      "reasoning": {"pointer": said.pointer, "start": said.start, "end": said.end},
                                      "sentence": sentence.strip()[:300]}))
        return findings


def _sentences(text: str) -> Iterator[tuple[int, int, str]]:
    for m in _SENTENCE.finditer(text):
        sentence = m.group()
        stripped = sentence.lstrip()
        if len(stripped) > 3:
            start = m.start() + len(sentence) - len(stripped)
            yield start, m.end(), stripped


def _sentence_around(text: str, start: int, end: int) -> str:
    lo = max(text.rfind(c, 0, start) for c in ".!?\n'\"") + 1
    hits = [i for c in ".!?\n" if (i := text.find(c, end)) >= 0]
    return text[lo: min(hits) if hits else len(text)] if end - start < 40 else text[start:end]


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(fold(text)) if w not in _STOP}  # fold: casefold, look-alikes read as Latin


def _name_families(name: str) -> set[str]:
    words = [w.lower() for w in _NAME_WORDS.findall(name)]
    return {_FAMILY_OF[w] for w in words if w in _FAMILY_OF}


class _UserWords:
    """What the user wrote in the whole history, joined and lowercased on first use only: most checks
    never need it, and building it reads every user turn of the session."""

    def __init__(self, exchange: Exchange, is_user: SegmentKind) -> None:
        self._exchange, self._is_user = exchange, is_user

    @cached_property
    def text(self) -> str:
        return " ".join(s.text for s in self._exchange.trusted if s.kind is self._is_user).lower()

    @cached_property
    def words(self) -> set[str]:
        return set(_WORD.findall(self.text))


def _newest(reasoning: list[Segment], exchange: Exchange) -> list[Segment]:
    """The response's reasoning, or the last turn's for a request-only check."""
    if exchange.has_response:
        return [s for s in reasoning if s.phase is Phase.RESPONSE]
    last_turn = max(s.turn for s in reasoning)
    return [s for s in reasoning if s.turn == last_turn]
