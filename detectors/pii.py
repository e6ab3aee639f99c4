"""`pii`: personal data in what the model produced (output, reasoning, tool-call arguments), via Presidio.

By default Presidio runs with its no-op NLP engine: pattern and checksum recognizers only, no model, no
download (shared/reference/offline-dependencies.md §1). An operator who installed a spaCy or transformers
NER model selects it with `nlp_engine` (Presidio's NlpEngineProvider configuration), which adds PERSON,
LOCATION and the other NER entities.

Presidio costs ~8 µs per word, so each entity has a cheap "could it match at all" pattern: a segment with
no '@' and too few digits never reaches the analyzer, and the analyzer only runs the recognizers of the
entities that passed.

Presidio reads the text folded by detectors/_fold.py (fullwidth digits and `＠`, zero-width characters inside a
number or an address, no-break and thin spaces between digit groups read as plain ones); spans cover the original
characters.

The policy's own patterns (`recognizers` and a `regex` allow list) may come from an inline config, written by
whoever calls the service: they are compiled by `regex` and searched with a timeout and a per-segment budget
(detectors/_schema_guard.py), not Presidio's 60 s. A custom pattern whose search did not finish is reported as a
finding of its own (`rule: pattern_unchecked`); an allow-list pattern that did not finish keeps the value reported.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

from detectors._choices import read_choice, read_severity
from detectors._fold import FoldedText, folded_view, warm_up
from detectors._pii_candidates import MIN_PHONE_DIGITS, PhoneScan, phone_candidates, phone_windows
from detectors._pii_candidates import digit_count as _digit_count
from detectors._schema_guard import REASONS, PatternChecks, current_checks, pattern_checks, policy_pattern
from detectors._textfilter import TextFilter
from guardrails.detector import Scope, Services, SettingError, refuse_unknown_keys
from guardrails.exchange import Segment, Trust
from guardrails.findings import Category, Hit, Severity
from guardrails.textview import redact, where

# The e-mail recognizer calls tldextract, which downloads the public suffix list on first use unless the
# URL list is empty; tldextract reads this when Presidio is imported, so it must be set first.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
DEFAULT_SCORE_THRESHOLD = 0.4  # drops the 0.01-0.3 guesses of the weak US_* recognizers
# What Presidio matches an allow list's patterns with (AnalyzerEngine.analyze's default `regex_flags`).
ALLOW_LIST_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE
NO_OP_ENGINE = {"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]}

# Cheap necessary conditions per entity, checked before Presidio runs. Each is looser than the
# recognizer it guards (it may let a segment through, never hold back a real match).
MAY_MATCH: dict[str, re.Pattern[str] | Callable[[str], bool]] = {
    # An '@', or a closing bracket after "at" (`[at]`, `( at )`): a character class first is scanned for in C.
    "EMAIL_ADDRESS": re.compile(r"@|[\])}>](?:(?<=(?i:at).)|(?<=(?i:at)\s.))"),
    "PHONE_NUMBER": lambda text: _may_be_phone(text),
    "CREDIT_CARD": re.compile(r"\d(?:[\s\-.]?\d){11}"),
    "US_SSN": re.compile(r"\d(?:[\s.\-]?\d){8}"),
    "IBAN_CODE": re.compile(r"[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]{4}){2}"),
    "IP_ADDRESS": re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"),
    "CRYPTO": re.compile(r"\b(?:[13][1-9A-HJ-NP-Za-km-z]{25}|bc1[a-z0-9]{20})"),
    "URL": re.compile(r"\w\.\w|://"),
    "MAC_ADDRESS": re.compile(r"[0-9A-Fa-f]{2}[:\-.][0-9A-Fa-f]{2}"),
    "UUID": re.compile(r"[0-9A-Fa-f]{8}-"),
}

ENTITY_WORDS = {
    "EMAIL_ADDRESS": "email address",
    "PHONE_NUMBER": "phone number",
    "CREDIT_CARD": "credit card number",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US social security number",
    "IP_ADDRESS": "IP address",
    "CRYPTO": "crypto wallet address",
    "PERSON": "person name",
    "LOCATION": "location",
}
DEFAULT_SEVERITY = {
    "CREDIT_CARD": Severity.HIGH,
    "US_SSN": Severity.HIGH,
    "IBAN_CODE": Severity.HIGH,
    "US_PASSPORT": Severity.HIGH,
    "US_DRIVER_LICENSE": Severity.HIGH,
    "US_BANK_NUMBER": Severity.HIGH,
    "MEDICAL_LICENSE": Severity.HIGH,
}
# Entities whose value is structural enough that a prefix in the preview helps the reader.
_PREVIEW_PREFIX = {"IBAN_CODE": 2}


# Phone numbers as people write them: international prefix, area code in parentheses, digit groups joined
# by one space, dot or dash, an extension. phonenumbers (Presidio's PhoneRecognizer) only accepts numbers
# valid in a configured region, and misses the formatted numbers of every other country.
_PHONE_PATTERN = (
    r"(?<![\w+.\-/:])"
    r"(?<!〒)(?<!〒 )"  # after the postal mark, a Japanese postal code: `〒100-0001` has the `555-0199` shape
    r"(?:(?:\+|00)\d{1,3}[ .\-]?(?:\(0\)[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?|\d{1,4}[ .\-])"
    r"|\(\d{1,4}\)[ .\-]?"
    r"|\d{2,5}[ .\-])"
    r"\d{2,8}(?:[ .\-]\d{2,8}){0,3}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?"
    r"(?!\w|[\-.,:/]\d)"
)
_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d+$", re.IGNORECASE)
# Dates, and the SSN shape (a valid SSN is the SSN recognizer's; an invalid one is a placeholder).
_NOT_A_PHONE = re.compile(
    r"^(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[.\-]\d{1,2}[.\-](?:1[89]|20)\d\d(?!\d)|\d{3}-\d{2}-\d{4}$)"
)
# 555-0199: the one shape allowed a single separator; "370 3911 Fourth Avenue" is a street address.
_LOCAL_NUMBER = re.compile(r"^\d{3}[.\-]\d{4}$")


def _may_be_phone(text: str) -> bool:
    return any(phone_candidates(text))


def _looks_like_phone(candidate: str) -> bool:
    number = _EXTENSION.sub("", candidate)
    if not MIN_PHONE_DIGITS <= _digit_count(number) <= 15 or _NOT_A_PHONE.match(number):
        return False
    separators = sum(c in " .-" for c in number)
    return number[0] in "+(" or number.startswith("00") or separators >= 2 or bool(_LOCAL_NUMBER.match(number))


# Card numbers of every ISO/IEC 7812 length (12-19 digits), contiguous or in groups of four (Amex 4-6-5) joined
# by one space, dash or dot, still Luhn-checked by Presidio's recognizer; Presidio's own pattern stops at 13-17
# digits and at IIN 2xxx. A number right after '+' is an international phone number.
_CARD_PATTERNS = (
    (r"(?<!\+)\b(?!1\d{12}\b)[1-6]\d{11,18}\b", "contiguous card number"),
    (r"\b[1-6]\d{3}([ \-.])\d{4}\1\d{4}(?:\1\d{1,7})?\b", "card number in groups of four"),
    (r"\b3\d{3}([ \-.])\d{6}\1\d{4,5}\b", "card number in 4-6-5 groups"),
)
_CARD_SEPARATORS = [("-", ""), (" ", ""), (".", "")]  # removed before the Luhn check
# An address written to slip past filters, as a reader still types it: `jane [at] example [dot] com`,
# `jane(at)example.com`. Only bracketed: a bare "at ... dot" is prose ("meet me at noon. Then"), as is a `.`
# with a space after it.
_BRACKETED = r"\s?[\[({{<]\s?(?i:{word})\s?[\])}}>]\s?"
_OBFUSCATED_EMAIL = (
    rf"(?<![\w.+\-])[\w.+\-]{{1,64}}{_BRACKETED.format(word='at')}[\w\-]{{1,63}}"
    rf"(?:(?:{_BRACKETED.format(word='dot')}|\.)[\w\-]{{1,63}})*(?:{_BRACKETED.format(word='dot')}|\.)"
    # A top-level domain in one case (Presidio matches ignoring case): `noon.Then` is a sentence after a missing
    # space ("Lunch (at) noon.Then").
    r"(?-i:[a-z]{2,24}|[A-Z]{2,24})\b"
)
# A number grouped in thousands by a no-break, narrow no-break or thin space, as French, Russian or SI typography
# writes it (`67 390 000`; escaped in raw JSON arguments): read as plain spaces so a card's groups still join, it is
# no phone number.
_TYPESET_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:(?:[\u00a0\u202f\u2009]|\\u(?:00[aA]0|202[fF]|2009))\d{3})+")


class PIIConfigError(ValueError):
    """The `pii` settings ask for something this installation cannot do (e.g. an NER model not installed)."""


def _model_names(nlp_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, model) pairs an NlpEngineProvider configuration would load."""
    engine = str(nlp_config.get("nlp_engine_name", ""))
    pairs: list[tuple[str, str]] = []
    for model in nlp_config.get("models") or ():
        name = model.get("model_name") if isinstance(model, Mapping) else None
        if isinstance(name, Mapping):  # transformers engine: {spacy: ..., transformers: ...}
            pairs.extend((str(k), str(v)) for k, v in name.items())
        elif name is not None:
            pairs.append((engine, str(name)))
    return pairs


def _check_models_installed(nlp_config: Mapping[str, Any]) -> None:
    """Refuse, with a clear message, a model Presidio would otherwise try to download (or exit on)."""
    engine = nlp_config.get("nlp_engine_name")
    if engine == "no_op":
        return
    if engine not in ("spacy", "transformers", "stanza"):
        raise PIIConfigError(f"pii: unknown nlp_engine_name {engine!r}; expected no_op, spacy, transformers or stanza")
    for kind, model in _model_names(nlp_config):
        if Path(model).exists():
            continue
        if kind == "spacy":
            import spacy.util

            if not spacy.util.is_package(model):
                raise PIIConfigError(
                    f"pii: spaCy model {model!r} is not installed; install its package or give a model "
                    "directory path (this service never downloads models), or use nlp_engine_name: no_op"
                )
        elif kind == "transformers":
            if importlib.util.find_spec("transformers") is None:
                raise PIIConfigError("pii: the transformers NLP engine needs the 'transformers' package installed")
            raise PIIConfigError(
                f"pii: transformers model {model!r} is not a local directory; download it ahead of time and "
                "give its path (this service never downloads models)"
            )
        else:
            raise PIIConfigError(f"pii: {kind} model {model!r} is not a local directory")
    if not _model_names(nlp_config):
        raise PIIConfigError("pii: nlp_engine needs a non-empty 'models' list")


def build_analyzer(nlp_config: Mapping[str, Any], countries: Sequence[str] | None,
                   phone_regions: Sequence[str]) -> Any:  # a presidio AnalyzerEngine: presidio is imported lazily
    """Build a Presidio AnalyzerEngine once; raises PIIConfigError for models that are not installed."""
    _check_models_installed(nlp_config)
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    try:
        nlp_engine = NlpEngineProvider(nlp_configuration=dict(nlp_config)).create_engine()
    except SystemExit as exc:  # spaCy's downloader exits instead of raising
        raise PIIConfigError(f"pii: could not load NLP engine {dict(nlp_config)!r} (download refused)") from exc
    except (OSError, ValueError) as exc:
        raise PIIConfigError(f"pii: could not load NLP engine: {exc}") from exc
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(
        languages=["en"], nlp_engine=nlp_engine, countries=list(countries) if countries is not None else None
    )
    registry.remove_recognizer("PhoneRecognizer")
    registry.remove_recognizer("CreditCardRecognizer")
    registry.remove_recognizer("EmailRecognizer")
    for recognizer in _pattern_recognizers(phone_regions):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def _unchanged_enhancer() -> Any:
    """A context enhancer that returns the results as they are (for the no-op NLP engine)."""
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer

    class UnchangedEnhancer(ContextAwareEnhancer):
        def __init__(self) -> None:
            super().__init__(0.0, 0.0, 0, 0)

        def enhance_using_context(self, text: str, raw_results: list[Any], nlp_artifacts: Any,
                                  recognizers: list[Any], context: list[str] | None = None) -> list[Any]:
            return raw_results

    return UnchangedEnhancer()


def _pattern_recognizers(phone_regions: Sequence[str]) -> list[Any]:
    """Our versions of Presidio's phone and card recognizers (built once, with the analyzer)."""
    import phonenumbers
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, PhoneRecognizer

    class RegionPhoneRecognizer(PhoneRecognizer):
        """Presidio's phonenumbers recognizer, cheaper and stricter.

        Each region is a full matcher pass (~0.06 ms per candidate), so phonenumbers only reads the windows
        around digit runs, within a per-segment budget (detectors/_pii_candidates.py); an international
        number (+CC) reads the same in every region, so the other regions only run on windows holding a
        national-format candidate. phonenumbers accepts 5- and 6-digit local numbers ("0896 69"), which in
        text are house numbers and postal codes far more often than phones: those are dropped.
        """

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            seen: set[tuple[int, int]] = set()
            results = []
            for window in phone_windows(text, len(self.supported_regions)).windows:
                regions = self.supported_regions if window.national else self.supported_regions[:1]
                for region in regions:
                    for result in self._window_matches(text, window.start, window.end, region, nlp_artifacts):
                        if (result.start, result.end) not in seen:
                            seen.add((result.start, result.end))
                            results.append(result)
            return results

        def _window_matches(self, text: str, start: int, end: int, region: str, nlp_artifacts: Any) -> list[Any]:
            """phonenumbers' matches in text[start:end], at their offsets in `text`."""
            results = []
            for match in phonenumbers.PhoneNumberMatcher(text[start:end], region, leniency=self.leniency):
                if _digit_count(match.raw_string) < MIN_PHONE_DIGITS:
                    continue
                result = self._get_recognizer_result(match, text, region, nlp_artifacts)
                result.start += start
                result.end += start
                if match.raw_string.startswith("(") and ")" not in match.raw_string:
                    result.start += 1  # "(1-800-843-5678)": phonenumbers keeps the unmatched "("
                results.append(result)
            return results

    class FormattedPhoneRecognizer(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool | None:
            return None if _looks_like_phone(pattern_text) else False

    phone = FormattedPhoneRecognizer(
        supported_entity="PHONE_NUMBER",
        name="FormattedPhoneRecognizer",
        patterns=[Pattern("formatted phone number", _PHONE_PATTERN, 0.4)],
        context=["phone", "call", "tel", "mobile", "cell", "fax", "contact"],
    )
    card = CreditCardRecognizer(patterns=[Pattern(name, regex, 0.3) for regex, name in _CARD_PATTERNS],
                                replacement_pairs=_CARD_SEPARATORS)
    regional = RegionPhoneRecognizer(supported_regions=tuple(r.upper() for r in phone_regions))
    obfuscated = PatternRecognizer(supported_entity="EMAIL_ADDRESS", name="ObfuscatedEmailRecognizer",
                                   patterns=[Pattern("obfuscated e-mail address", _OBFUSCATED_EMAIL, 0.6)])
    return [regional, phone, card, _email_recognizer(), obfuscated]


def _email_recognizer() -> Any:
    """Presidio's e-mail recognizer, run only around each '@'.

    Its pattern backtracks over every start of a dotted run ("1.2.3.4...") in front of an '@': quadratic,
    a minute on 30 KB. Around an '@' it reads the address's own characters, at most RFC 5321's 64 before
    and 255 after, so it matches as on the whole text and costs at most that much per '@'.
    """
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class WindowedEmailRecognizer(EmailRecognizer):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[Any]:
            results = []
            for start, end in _email_windows(text):
                for result in super().analyze(text[start:end], entities, nlp_artifacts, regex_flags):
                    result.start += start
                    result.end += start
                    results.append(result)
            return results

    return WindowedEmailRecognizer()


_EMAIL_LOCAL = re.compile(r"[!#$%&'*+\-/=?^_`{|}~.\w]{0,64}\Z")
_EMAIL_DOMAIN = re.compile(r"[\w.\-]{0,255}")


def _email_windows(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) around each '@': the characters an address can hold on either side, merged."""
    pending: tuple[int, int] | None = None
    for at in (m.start() for m in re.finditer("@", text)):
        local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
        start = local.start() if local else at
        end = _EMAIL_DOMAIN.match(text, at + 1).end()
        if pending and start <= pending[1]:
            pending = (pending[0], max(pending[1], end))
            continue
        if pending:
            yield pending
        pending = (start, end)
    if pending:
        yield pending


def _custom_recognizers(specs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Operator recognizers in Presidio's own dict shape (patterns or deny_list), e.g. employee ids. Their patterns
    are compiled by `regex` here (one that does not compile, or compiles too large, stops the policy) and searched
    under the segment's limits (`_BoundedPattern`); a deny list is escaped words, searched as Presidio does."""
    from presidio_analyzer import PatternRecognizer

    recognizers = []
    for spec in specs:
        spec = {"supported_language": "en", **spec}
        spec.setdefault("name", f"custom_{spec.get('supported_entity', 'entity')}")
        recognizer = PatternRecognizer.from_dict(spec)
        flags = recognizer.global_regex_flags
        for pattern in recognizer.patterns[:len(spec.get("patterns") or ())]:  # (the deny list's comes last)
            try:
                compiled = policy_pattern(pattern.regex, flags or 0)
            except ValueError as exc:
                raise SettingError(f"setting recognizers: {recognizer.name}: {exc}") from None
            # Presidio reuses a compiled pattern built with the flags it searches with.
            pattern.compiled_regex = _BoundedPattern(compiled, recognizer.supported_entities[0])
            pattern.compiled_with_flags = flags
        recognizers.append(recognizer)
    return recognizers


class _BoundedPattern:
    """A custom pattern where Presidio searches it: every match found within the segment's limits, or none when the
    search did not finish (recorded, and reported by the detector), instead of Presidio's 60 s timeout."""

    def __init__(self, compiled: regex.Pattern[str], entity: str) -> None:
        self.compiled = compiled
        self.entity = entity
        self.pattern = compiled.pattern

    def finditer(self, text: str, timeout: float | None = None) -> Iterator[regex.Match[str]]:
        return iter(current_checks().find_all(self.compiled, text))


def _allow_patterns(allow_list: list[str]) -> list[regex.Pattern[str]]:
    patterns = []
    for term in allow_list:
        if term:  # (Presidio drops empty ones)
            try:
                patterns.append(policy_pattern(term, ALLOW_LIST_FLAGS))
            except ValueError as exc:
                raise SettingError(f"setting allow_list: {exc}") from None
    return patterns


class PIIDetector(TextFilter):
    """Settings (all optional):

    entities: [EMAIL_ADDRESS, ...]       Presidio entity names to report
    score_threshold: 0.4                 minimum Presidio score
    countries: [us]                      country-specific recognizers to load (Presidio's countries filter)
    phone_regions: [US, GB, ...]         regions the phone recognizer parses numbers for
    allow_list: [...]                    values never reported; allow_list_match: exact | regex
    context: [ssn, ...]                  context words that raise scores (request-level in Presidio)
    recognizers: [{...}]                 extra PatternRecognizer dicts (supported_entity, patterns/deny_list)
    severity: {ENTITY: low|medium|high|critical}
    nlp_engine: {nlp_engine_name: spacy, models: [{lang_code: en, model_name: en_core_web_lg}]}
    """

    name = "pii"
    category = Category.PII
    # The user's own input is theirs to share; what the model emits or sends to tools is what leaks.
    default_scope = Scope(trust=frozenset({Trust.MODEL}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        s = self.settings
        self.entities: tuple[str, ...] = tuple(self.setting("entities", list, [], items=str) or DEFAULT_ENTITIES)
        # Presidio's scores are 0..1: a threshold above 1 would report nothing.
        self.score_threshold = self.setting("score_threshold", float, DEFAULT_SCORE_THRESHOLD, minimum=0, maximum=1)
        # Values, not names: YAML reads an unquoted all-digit value as a number.
        self.allow_list: list[str] = [str(v) for v in self.setting("allow_list", list, [])]
        self.allow_list_match = read_choice(self.settings, "allow_list_match", ("exact", "regex"), "exact")
        # Searched here, bounded (Presidio would search the joined patterns for up to 60 s per result).
        self.allow_patterns = _allow_patterns(self.allow_list) if self.allow_list_match == "regex" else []
        self.context: list[str] | None = self.setting("context", list, [], items=str) or None
        severity = self.setting("severity", dict, {})
        # Values checked here (`critcal` names the closest); names once the analyzer says what it recognizes.
        self.severity = {**DEFAULT_SEVERITY, **{
            k: read_severity(severity, k, DEFAULT_SEVERITY.get(k, Severity.MEDIUM), where="severity.")
            for k in severity}}
        # Loads models from the server's disk (a model name may be a directory path).
        nlp_engine = self.setting("nlp_engine", dict, {}, server_only=True) or NO_OP_ENGINE
        # `countries: null` turns Presidio's country filter off (every country's recognizers).
        countries = None if "countries" in s and s["countries"] is None else (
            self.setting("countries", list, ["us"], items=str))
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer

        phone_regions = self.setting("phone_regions", list, [], items=str) or PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS
        self.phone_region_count = len(phone_regions)
        self.analyzer = build_analyzer(nlp_engine, countries, phone_regions)
        if nlp_engine.get("nlp_engine_name") == "no_op" and self.context is None:
            # No tokens and no context words: Presidio's enhancer can change nothing, but deep-copies
            # every result to find that out (half the cost of analyzing a short text with an e-mail).
            self.analyzer.context_aware_enhancer = _unchanged_enhancer()
        custom = _custom_recognizers(self.setting("recognizers", list, [], items=dict))
        self.bounded = bool(custom or self.allow_patterns)  # patterns of the policy's: searched under limits
        self._custom_patterns = {p.compiled_regex.pattern: p.compiled_regex.entity for r in custom for p in r.patterns
                                 if isinstance(p.compiled_regex, _BoundedPattern)}
        for recognizer in custom:
            self.analyzer.registry.add_recognizer(recognizer)
            self.entities += tuple(e for e in recognizer.supported_entities if e not in self.entities)
        supported = set(self.analyzer.get_supported_entities("en"))  # custom recognizers' entities included
        try:  # a misspelt entity (`EMAIL_ADRESS`) would keep the default severity without a word
            refuse_unknown_keys(severity, sorted(supported), "pii.severity")
        except SettingError as exc:
            raise SettingError(f"{exc} (the entities of this configuration: an NER entity needs nlp_engine, a "
                               "country-specific one countries)") from None
        unknown = [e for e in self.entities if e not in supported]
        if unknown:
            raise PIIConfigError(
                f"pii: no recognizer for {unknown} with this configuration (an NER entity needs nlp_engine; "
                f"a country-specific one needs countries); supported: {sorted(supported)}"
            )
        # Entities without a prefilter (NER, custom) are always analyzed.
        self.always = tuple(e for e in self.entities if e not in MAY_MATCH)
        self.prefiltered = tuple(
            (e, may.search if isinstance(may, re.Pattern) else may)
            for e, may in ((e, MAY_MATCH[e]) for e in self.entities if e in MAY_MATCH)
        )
        warm_up()  # folding's character classes built here, not on the first check

    def candidate_entities(self, text: str) -> list[str]:
        """The entities that could possibly match `text`; empty means Presidio need not run."""
        return [*self.always, *(e for e, may in self.prefiltered if may(text))]

    def analyze(self, segment: Segment) -> list[Hit]:
        # Fullwidth digits, a zero-width space inside a card number, a thin space between its groups: the reader
        # still has the number. Presidio reads the folded text; spans cover the original characters.
        view = folded_view(segment, blank_escapes=True)  # `scan_view(segment)`, folded
        text = view.text
        entities = self.candidate_entities(text)
        if not entities:
            return []
        if not self.bounded:
            results = self._analyze(text, entities)
            unchecked: list[Hit] = []
        else:
            with pattern_checks() as checks:  # one budget for the policy's patterns on this segment
                results = self._analyze(text, entities)
                if self.allow_patterns:
                    results = [r for r in results if not self._allowed(text[r.start:r.end], checks)]
            unchecked = self._unchecked_hits(segment, checks)
        results = [r for r in results if not _typeset_thousands(r, view, segment.text)]
        hits = [self._hit(segment, *view.original_span(r.start, r.end), r) for r in _drop_nested(results)]
        hits.extend(unchecked)
        if "PHONE_NUMBER" in entities:
            hits.extend(self._phone_cap_note(segment, view))
        return hits

    def _analyze(self, text: str, entities: list[str]) -> list[Any]:
        exact = self.allow_list if self.allow_list_match == "exact" else []  # a regex allow list is applied here
        return self.analyzer.analyze(text=text, language="en", entities=entities, score_threshold=self.score_threshold,
                                     context=self.context, allow_list=exact or None, allow_list_match="exact")

    def _allowed(self, word: str, checks: PatternChecks) -> bool:
        """An allow-list pattern finds a match in the value. One that could not say allows nothing: the value stays
        reported."""
        return any(checks.judge(pattern, word) is True for pattern in self.allow_patterns)

    def _unchecked_hits(self, segment: Segment, checks: PatternChecks) -> list[Hit]:
        """One finding per custom recognizer pattern whose search did not finish: what it looks for may be there."""
        hits = []
        for pattern, reason in dict.fromkeys((u.pattern, u.reason) for u in checks.unchecked
                                             if u.pattern in self._custom_patterns):
            entity = self._custom_patterns[pattern]
            hits.append(Hit(
                message=f"{entity} {where(segment)} not checked: custom pattern {pattern[:80]!r}: {REASONS[reason]}",
                start=None, end=None, severity=self.severity.get(entity, Severity.MEDIUM),
                evidence={"entity": entity, "rule": "pattern_unchecked", "pattern": pattern[:200], "reason": reason,
                          "segment_kind": segment.kind.value}))
        return hits

    def _phone_cap_note(self, segment: Segment, view: FoldedText) -> list[Hit]:
        """Say so when phonenumbers stopped early: the rest of the segment's numbers were not parsed."""
        scan: PhoneScan = phone_windows(view.text, self.phone_region_count)
        if scan.unchecked_from is None:
            return []
        start, length = view.original_span(scan.unchecked_from, scan.unchecked_from)[0], len(segment.text)
        return [Hit(
            message=f"phone numbers {where(segment)} only checked up to character {start} "
                    f"of {length} (too many digit runs)",
            start=start,
            end=length,
            severity=Severity.LOW,
            evidence={"entity": "PHONE_NUMBER", "capped": True, "checked_chars": start,
                      "length": length, "segment_kind": segment.kind.value},
        )]

    def _hit(self, segment: Segment, start: int, end: int, result: Any) -> Hit:
        """`result`: Presidio's, in the folded text; `start`/`end`: its span in the original text."""
        entity = result.entity_type
        value = segment.text[start:end]
        words = ENTITY_WORDS.get(entity, entity.lower().replace("_", " "))
        evidence: dict[str, Any] = {
            "entity": entity,
            "preview": redact(value, _PREVIEW_PREFIX.get(entity, 0)),
            "length": len(value),
            "segment_kind": segment.kind.value,
        }
        return Hit(
            message=f"{words} {where(segment)}",
            start=start,
            end=end,
            severity=self.severity.get(entity, Severity.MEDIUM),
            score=round(float(result.score), 3),
            evidence=evidence,
        )


def _typeset_thousands(result: Any, view: FoldedText, text: str) -> bool:
    """A "phone number" that is a number grouped in thousands by typographic spaces in the original text."""
    return result.entity_type == "PHONE_NUMBER" and bool(
        _TYPESET_THOUSANDS.fullmatch(text, *view.original_span(result.start, result.end)))


def _drop_nested(results: list[Any]) -> list[Any]:
    """Keep one result per region, the strongest (then longest): a URL inside an e-mail, a "phone number"
    that is an IP address or a card number, go.

    Kept results never overlap, so sorted by start they are sorted by end too, and only the kept result
    starting last before `r` ends can overlap `r`: one bisection each (a pairwise check was quadratic).
    """
    ordered = sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start))
    starts: list[int] = []
    kept: list[Any] = []  # in start order, parallel to `starts`
    for r in ordered:
        i = bisect.bisect_left(starts, r.end)
        if i and kept[i - 1].end > r.start:
            continue
        starts.insert(i, r.start)
        kept.insert(i, r)
    return kept
