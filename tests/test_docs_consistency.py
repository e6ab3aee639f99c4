"""The docs' closed lists against the code they describe: each test fails when one side changes alone.

README.md: the Configuration table (environment variables and their defaults), the closed list of finding
categories, the error table, the `guardrails check` exit codes; every CLI option; docs/*.md: a section per
installed detector naming every setting it reads, and the built-in rails table of docs/policies.md.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import api.app  # imports every module that defines an error type (api.admin included)
import api.errors
from guardrails import cli, config
from guardrails.colang.catalog import BUILTIN_FLOWS
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry, RecordedSettings
from guardrails.errors import GuardrailsError
from guardrails.findings import Category

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
ALL_DOCS = "\n".join([README, *DOCS.values()])
BACKTICKED = re.compile(r"`([^`]+)`")
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)


def section(text: str, title: str) -> str:
    """The section whose heading starts with `title`."""
    heading = re.search(rf"^(#+) {re.escape(title)}.*$", text, re.M)
    assert heading, f"no section {title!r}"
    return body_of(text, heading)


def body_of(text: str, heading: re.Match[str]) -> str:
    """What follows `heading` up to the next heading of its level or above."""
    end = re.compile(rf"^#{{1,{len(heading.group(1))}}} ", re.M).search(text, heading.end())
    return text[heading.end():end.start() if end else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text` (header and separator rows included)."""
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            for line in text.splitlines() if line.lstrip().startswith("|")]


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# --- README: configuration -------------------------------------------------------------------------------

def documented_variables() -> dict[str, str]:
    """Environment variable -> its README default where that cell is only values, one per variable of the row
    (`8000`); "" where the default is prose (`audit.sqlite3` under the data dir, unset)."""
    out: dict[str, str] = {}
    for cells in table_rows(section(README, "Configuration")):
        names = [v for v in BACKTICKED.findall(cells[0]) if v.startswith("GUARDRAILS_")]
        defaults = BACKTICKED.findall(cells[1]) if len(cells) > 1 else []
        only_values = len(cells) > 1 and cells[1] == ", ".join(f"`{d}`" for d in defaults)
        for i, name in enumerate(names):
            out[name] = defaults[i] if only_values and len(defaults) == len(names) else ""
    return out


def test_configuration_table_lists_exactly_the_variables_the_settings_read() -> None:
    read = set(re.findall(r'"(GUARDRAILS_[A-Z_]+)"', Path(config.__file__).read_text(encoding="utf-8")))
    assert set(documented_variables()) == read


def test_configuration_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARDRAILS_DATA_DIR", raising=False)  # the test suite points it at a temporary directory
    defaults = Settings()
    field_names = {f.name for f in fields(Settings)}
    for name, documented in documented_variables().items():
        attribute = name.removeprefix("GUARDRAILS_").lower()
        assert attribute in field_names, f"{name} sets no Settings field"
        actual = getattr(defaults, attribute)
        if not documented or not isinstance(actual, (str, int, Path)):
            continue  # a prose default: nothing exact to compare
        same = Path(documented) == actual if isinstance(actual, Path) else documented == str(actual)
        assert same, f"README says {name} defaults to {documented!r}; Settings has {actual!r}"


# --- README: the contract's closed lists -----------------------------------------------------------------

def test_category_list_is_the_category_enum() -> None:
    listed = section(README, "The contract").split("* `category` is a closed list", 1)[1].split("###", 1)[0]
    documented = [cells[0].strip("`") for cells in table_rows(listed)[2:]]
    assert documented == [c.value for c in Category]


def error_types_in_code() -> set[str]:
    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    source = Path(api.errors.__file__).read_text(encoding="utf-8")
    literal = set(re.findall(r'error_response\(\d+, "([a-z_]+)"', source))  # types answered without a class
    return {c.type for c in subclasses(GuardrailsError)} | set(api.errors.STATUS_TYPES.values()) | literal


def test_error_table_lists_every_error_type() -> None:
    rows = table_rows(section(README, "Errors"))[2:]
    documented = {name for cells in rows for name in BACKTICKED.findall(cells[1])}
    assert documented == error_types_in_code()


def test_check_exit_codes_are_the_cli_codes() -> None:
    row = next(line for line in section(README, "CLI").splitlines() if line.startswith("| `guardrails check"))
    listed = row.split("exit code", 1)[1]
    for verdict, code in cli.EXIT_BY_VERDICT.items():
        assert f"{code} {verdict}" in listed
    codes = {*cli.EXIT_BY_VERDICT.values(), cli.EXIT_BAD_INPUT, cli.EXIT_CONFIG, cli.EXIT_USAGE, cli.EXIT_INTERNAL}
    assert {int(n) for n in re.findall(r"\b(\d+) [a-z]", listed)} == codes


# --- CLI options --------------------------------------------------------------------------------------------

class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def cli_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `guardrails` builds, caught where it would parse (nothing runs)."""
    def catch(parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Parsed) as caught:
        cli.main([])
    return caught.value.parser


def options(parser: argparse.ArgumentParser, command: tuple[str, ...] = ()) -> Iterator[tuple[str, list[str]]]:
    """(command, the flags of one option) for every option of every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*command, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            yield " ".join(command), action.option_strings


def test_every_cli_option_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [f"guardrails {command} {'/'.join(flags)}" for command, flags in options(cli_parser(monkeypatch))
               if not any(mentions(ALL_DOCS, flag) for flag in flags)]
    assert not missing


# --- detectors and built-in rails ---------------------------------------------------------------------------

class _ProbeSettings(RecordedSettings):
    """Empty settings that still count as given (a detector replaces falsy settings with a plain dict)."""

    def __bool__(self) -> bool:
        return True


def settings_read(detector: type) -> list[str]:
    probe = _ProbeSettings({})
    detector(probe)
    return list(probe.asked)


def detector_section(name: str) -> str:
    """The docs section (level 2 or deeper) whose heading names the detector in backticks or as its whole title."""
    for text in DOCS.values():
        for heading in HEADING.finditer(text):
            title = heading.group(2)
            if len(heading.group(1)) >= 2 and (f"`{name}`" in title or re.sub(r"^\d+\. ", "", title) == name):
                return body_of(text, heading)
    raise AssertionError(f"detector {name!r} has no section in docs/*.md")


REGISTRY = DetectorRegistry.from_entry_points()


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_detector_has_a_section_naming_its_settings(name: str) -> None:
    text = detector_section(name)
    missing = [key for key in settings_read(REGISTRY.get(name)) if not mentions(text, key)]
    assert not missing, f"the {name} section does not mention {missing}"


def test_builtin_rails_table_is_the_catalog() -> None:
    table = section(DOCS["policies.md"], "Built-in rails")
    documented = {flow.strip("`"): detector for cells in table_rows(table)[2:]
                  for flow, detector in zip(cells[0::2], cells[1::2], strict=True) if flow}
    assert documented == {flow: detector for flow, (detector, _) in BUILTIN_FLOWS.items()}
