"""`secret`: credentials anywhere in the exchange, from a precompiled rule table of our own.

One regex per rule, looped (a single alternation loses each rule's literal-prefix optimisation; see
shared/reference/offline-dependencies.md §2). Each rule's `value` group is the secret itself, so spans
cover exactly what a gateway would redact. Evidence shows a redacted preview, never the secret. The rules read the
text folded by detectors/_fold.py (a key split by zero-width characters or typed in fullwidth letters is still a
leak), and the readings of detectors/_readings.py: base64, hex and percent-encoded runs decoded, string literals
joined (a key sent encoded or in pieces is still sent); spans cover the original characters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from detectors._choices import read_severity
from detectors._fold import FoldedText, folded_view, warm_up
from detectors._readings import decoded, literals_joined, percent_decoded
from detectors._textfilter import TextFilter
from guardrails.detector import Scope, Services
from guardrails.exchange import Segment, SegmentKind
from guardrails.findings import Category, Hit, Severity
from guardrails.policy import choices_hint
from guardrails.textview import redact, where

# A token ends where a token character no longer follows (`\b` fails after a trailing '-' or '_'). It starts after
# a non-token character, or after a `\n`, `\r` or `\t` escape written out in JSON or code a model printed.
_END = r"(?![A-Za-z0-9_\-])"
_START = r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[nrt]))"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    pattern: re.Pattern[str]  # the secret is group "value" (or the whole match)
    severity: Severity = Severity.CRITICAL
    prefix: int = 0  # leading characters of the value that are public structure (shown in previews)
    min_entropy: float | None = None  # Shannon bits per character the value must reach
    hints: tuple[str, ...] = ()  # lower-case literals, one of which the text must contain for the rule to run
    generic: bool = False  # loses to a specific rule on the same span
    free_form: bool = False  # the value is whatever a person typed: skip placeholders and plain words


def _rule(id: str, description: str, hints: tuple[str, ...], regex: str, **kw: Any) -> Rule:
    return Rule(id, description, re.compile(regex), hints=hints, **kw)


RULES: tuple[Rule, ...] = (
    _rule("aws_access_key_id", "AWS access key id", ("a3t", "akia", "asia", "abia", "acca"),
          rf"{_START}(?P<value>(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{{16}}){_END}", prefix=4),
    _rule("aws_secret_access_key", "AWS secret access key", ("aws",),
          r"(?i:aws).{0,20}?(?i:secret|key).{0,20}?['\"=:\s]\s*(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
          min_entropy=4.0),
    _rule("gcp_api_key", "Google API key", ("aiza",),
          rf"{_START}(?P<value>AIza[0-9A-Za-z_\-]{{35}}){_END}", prefix=4),
    _rule("gcp_service_account", "Google service account private key id", ("private_key_id",),
          r"\"private_key_id\"\s*:\s*\"(?P<value>[0-9a-f]{40})\""),
    _rule("azure_storage_key", "Azure storage account key", ("accountkey=",),
          r"(?i:AccountKey)=(?P<value>[A-Za-z0-9+/]{86}==)"),
    _rule("azure_ad_client_secret", "Azure AD client secret", ("q~",),
          r"(?<![A-Za-z0-9_~.\-])(?P<value>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})(?![A-Za-z0-9_~.\-])"),
    _rule("azure_sas_token", "Azure shared access signature", ("sig=",),
          r"[?&]sig=(?P<value>[A-Za-z0-9%+/]{40,}(?:%3D|=){0,2})", severity=Severity.HIGH),
    _rule("github_token", "GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
          rf"{_START}(?P<value>(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{{36}}|github_pat_[A-Za-z0-9_]{{82}}){_END}",
          prefix=4),
    _rule("gitlab_token", "GitLab token", ("glpat-", "glptt-", "gldt-", "glrt-", "glsoat-", "glcbt-"),
          rf"{_START}(?P<value>gl(?:pat|ptt|dt|rt|soat|cbt)-[A-Za-z0-9_\-]{{20,}}){_END}", prefix=6),
    _rule("slack_token", "Slack token", ("xox",),
          rf"{_START}(?P<value>xox[abposr]-[0-9A-Za-z\-]{{10,}}){_END}", prefix=5),
    _rule("slack_webhook", "Slack webhook URL", ("hooks.slack.com",),
          r"https://hooks\.slack\.com/services/(?P<value>T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,})",
          severity=Severity.HIGH),
    _rule("stripe_live_key", "Stripe live key", ("_live_",),
          rf"{_START}(?P<value>(?:sk|rk)_live_[0-9A-Za-z]{{24,}}){_END}", prefix=8),
    _rule("stripe_test_key", "Stripe test key", ("_test_",),
          rf"{_START}(?P<value>(?:sk|rk)_test_[0-9A-Za-z]{{24,}}){_END}", prefix=8, severity=Severity.HIGH),
    _rule("anthropic_key", "Anthropic API key", ("sk-ant-",),
          rf"{_START}(?P<value>sk-ant-(?:api|admin)\d{{2}}-[A-Za-z0-9_\-]{{80,}}){_END}", prefix=7),
    # OpenAI keys embed base64("OpenAI") = T3BlbkFJ; project and service keys may not, but are long.
    _rule("openai_key", "OpenAI API key", ("sk-",),
          rf"{_START}(?P<value>sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{{20,}}T3BlbkFJ[A-Za-z0-9_\-]{{20,}}"
          rf"|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{{58,}}){_END}", prefix=3),
    _rule("huggingface_token", "Hugging Face token", ("hf_", "api_org_"),
          rf"{_START}(?P<value>hf_[A-Za-z0-9]{{34}}|api_org_[A-Za-z0-9]{{34}}){_END}", prefix=3),
    _rule("private_key", "PEM private key", ("private key",),
          r"(?P<value>-----BEGIN (?P<kind>(?:[A-Z0-9]+ ){0,2})PRIVATE KEY(?: BLOCK)?-----"
          # the whole block; a truncated one runs to the end of its base64 lines
          r"(?:[\s\S]{0,16384}?-----END (?P=kind)PRIVATE KEY(?: BLOCK)?-----"
          r"|(?:(?:\s|\\[nr])*[A-Za-z0-9+/=]{16,})*))"),
    _rule("jwt", "JSON Web Token", ("eyj",),
          rf"{_START}(?P<value>eyJ[A-Za-z0-9_\-]{{5,}}\.eyJ[A-Za-z0-9_\-]{{5,}}\.[A-Za-z0-9_\-]{{10,}}){_END}",
          severity=Severity.HIGH, prefix=3),
    # scheme://user:password@host: the password is the secret.
    _rule("url_credentials", "password in a URL", ("://",),
          r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/?#@\"'<>\\]{1,256}:(?P<value>[^\s/?#@\"'<>\\]{3,256})@"
          r"[A-Za-z0-9.\-\[\]]+", severity=Severity.HIGH, free_form=True),
    # api_key = "…", "password": "…", TOKEN=…: the value must look random, not like a word or placeholder.
    _rule("generic_secret_assignment", "secret assigned to a credential-named key",
          ("key", "secret", "token", "pass", "pwd", "credential", "bearer"),
          r"(?i:(?:api|access|auth|client|secret|private|signing|encryption)[_\-.]?(?:key|secret|token)"
          r"|password|passwd|pwd|secret|token|credentials?|bearer)"
          r"(?:[A-Za-z0-9_\-.]{0,20})[\"']?\s{0,4}(?:=|:=|:|=>)\s{0,4}[\"'`]?"
          r"(?P<value>[A-Za-z0-9_\-+/=.~!@#$%^&*]{8,256})(?=[\"'`]|[\s,;})\]]|$)",
          severity=Severity.HIGH, min_entropy=3.0, generic=True, free_form=True),
)
RULE_IDS = frozenset(r.id for r in RULES)

# Values that are obviously not secrets: templates, env lookups, masks, documentation placeholders.
_PLACEHOLDER = re.compile(
    r"^(?:\$\{?|%\(?|\{\{|<|\*|\.{3}|os\.environ|process\.env|env\.|getenv)"
    r"|(?i:your|example|placeholder|changeme|redacted|dummy|sample|insert|replace|todo|xxxx|\*\*\*\*)"
    r"|^(?i:pass(?:word)?|passwd|pwd|secret|token|pass123|password123|null|none|undefined)$",
)


MAX_MIN_ENTROPY = 6.0


def shannon_entropy(value: str) -> float:
    """Bits per character of the value's own character distribution."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


class SecretDetector(TextFilter):
    """Settings (all optional):

    disabled_rules: [jwt, ...]       rule ids to skip
    min_entropy: 3.0                 bits/char for the generic assignment rule
    allow_list: [...]                exact values never reported (e.g. published test keys)
    severity: {rule_id: level}
    """

    name = "secret"
    category = Category.SECRET
    default_scope = Scope()  # a credential is a leak wherever it appears

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        disabled = set(self.setting("disabled_rules", list, [], items=str))
        severity = self.setting("severity", dict, {})
        unknown = (disabled | set(severity)) - RULE_IDS
        if unknown:
            first = sorted(unknown)[0]
            raise ValueError(f"secret: unknown rule ids {sorted(unknown)}{choices_hint(first, sorted(RULE_IDS))}")
        self.rules = tuple(r for r in RULES if r.id not in disabled)
        # A key split into literals or encoded is a provider's key: the format rules read joined literals and
        # decoded runs, never the free-form ones (any two values joined would make a "password").
        self.format_rules = tuple(r for r in self.rules if not (r.generic or r.free_form))
        # Bits per character: random base64 has 6, so a higher minimum would switch the generic rule off.
        self.generic_entropy = self.setting("min_entropy", float, 3.0, minimum=0, maximum=MAX_MIN_ENTROPY)
        # Values, not names: YAML reads an unquoted all-digit value as a number.
        self.allow_list = frozenset(str(v) for v in self.setting("allow_list", list, []))
        # null: the rule's own severity; a misspelt value names the closest (`critcal` -> critical).
        self.severity = {k: read_severity(severity, k, Severity.HIGH, where="severity.") for k, v in severity.items()
                         if v is not None}
        warm_up()  # folding's character classes built here, not on the first check

    def analyze(self, segment: Segment) -> list[Hit]:
        # A key split by zero-width characters, or typed in fullwidth or look-alike letters, still leaks: whoever
        # reads it gets the key back by deleting or normalizing them. So the rules read the folded text, and a
        # span covers the original characters, the invisible ones inside included (what a gateway must redact).
        # The same holds for a key sent base64-, hex- or URL-encoded, or in pieces: the rules read those too.
        view = folded_view(segment, blank_escapes=True)  # `scan_view(segment)`, folded
        found = self._found(view, self.rules)
        unescaped = percent_decoded(view)  # a URL reads with its escapes decoded: every rule applies
        if unescaped is not None:
            found += self._found(unescaped, self.rules, "decoded")
        # Base64 and hex runs are read for keys by their format only: a run is data (a pagination cursor, a JWT's
        # claims) whose `"token": "…"` or `password=…` is no more a typed secret than any other field of it.
        reading = decoded(unescaped or view)
        if reading is not None:
            found += self._found(reading, self.format_rules, "decoded")
        kept = _resolve_overlaps(found)
        joined = self._joined(segment)
        if joined is not None:  # only where no key was found whole: joining would stretch one into the next value
            pieced = [f for f in self._found(joined, self.format_rules, "joined")
                      if not _split_at_prefix(f, segment.text)]
            kept += [f for f in _resolve_overlaps(pieced) if all(f.end <= k.start or f.start >= k.end for k in kept)]
        return [self._hit(segment, f) for f in sorted(kept, key=lambda f: f.start)]

    def _joined(self, segment: Segment) -> FoldedText | None:
        """The segment with its string literals joined (its escaped quotes kept: they delimit literals)."""
        arguments = segment.kind is SegmentKind.TOOL_CALL
        if not (arguments or "+" in segment.text):
            return None
        return literals_joined(folded_view(segment), json_values=arguments)

    def _found(self, view: FoldedText, rules: tuple[Rule, ...], reading: str | None = None) -> list[Found]:
        """The rules' matches in `view`, at their spans in the original text."""
        text = view.text
        lower = text.lower()
        found: list[Found] = []
        for rule in rules:
            if rule.hints and not any(h in lower for h in rule.hints):
                continue  # a substring test is far cheaper than a regex scan of the whole text
            for match in rule.pattern.finditer(text):
                start, end = match.span("value")
                if self._accept(rule, text[start:end]):
                    found.append(Found(*view.original_span(start, end), rule, text[start:end], reading))
        return found

    def _accept(self, rule: Rule, value: str) -> bool:
        if value in self.allow_list:
            return False
        if rule.free_form and (_PLACEHOLDER.search(value) or (rule.generic and (value.isalpha() or value.isdigit()))):
            return False
        threshold = self.generic_entropy if rule.generic else rule.min_entropy
        return threshold is None or shannon_entropy(value) >= threshold

    def _hit(self, segment: Segment, found: Found) -> Hit:
        rule, value = found.rule, found.value
        preview = (
            value[: value.index("-----", 5) + 5] + "…" if rule.id == "private_key" else redact(value, rule.prefix)
        )
        evidence: dict[str, Any] = {"rule": rule.id, "preview": preview, "length": found.end - found.start}
        if found.reading:  # the span holds the key encoded or in pieces; the preview is of the key
            evidence["reading"] = found.reading
        return Hit(
            message=f"{rule.description} {where(segment)}",
            start=found.start,
            end=found.end,
            severity=self.severity.get(rule.id, rule.severity),
            score=1.0,
            evidence=evidence,
        )


# Where a join starts: the quote that closes a literal (escaped in raw JSON arguments).
_GLUE_START = re.compile(r"""\\?["'`]""")


def _split_at_prefix(found: Found, text: str) -> bool:
    """Whether the first piece of a joined key is no more than the key's public prefix: data that starts like a key
    (`["ASIA", "EMEA", "APAC", "LATAM", "ANZ"]` reads as an AWS key id), not a key split inside its secret part."""
    glue = _GLUE_START.search(text, found.start, found.end)
    return glue is not None and glue.start() - found.start <= found.rule.prefix


class Found(NamedTuple):
    start: int  # the span in the original text
    end: int
    rule: Rule
    value: str  # the secret as the rules read it (folded, decoded, joined)
    reading: str | None  # how: None for the folded text, else "decoded" or "joined"


def _resolve_overlaps(found: list[Found]) -> list[Found]:
    """One finding per secret: specific rules beat the generic one, then the longer span, then the plain reading."""
    ordered = sorted(found, key=lambda f: (f.rule.generic, -(f.end - f.start), f.reading is not None, f.start))
    kept: list[Found] = []
    for f in ordered:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return kept
