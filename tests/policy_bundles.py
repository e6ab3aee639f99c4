"""Policy bundles written for a test: a config.yml plus any other files (`name__co=...` writes `name.co`), and
`guardrails policy validate` run on one as an author runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails.cli import main


def bundle(root: Path, name: str, config: str, **files: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text(config)
    for file_name, text in files.items():
        (directory / file_name.replace("__", ".")).write_text(text)
    return directory


def validate(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit code and printed output of `guardrails policy validate DIRECTORY`."""
    code = main(["policy", "validate", str(directory)])
    return code, capsys.readouterr().out
