"""Policy bundles written for a test: a config.yml plus any other files (`name__co=...` writes `name.co`)."""

from __future__ import annotations

from pathlib import Path


def bundle(root: Path, name: str, config: str, **files: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text(config)
    for file_name, text in files.items():
        (directory / file_name.replace("__", ".")).write_text(text)
    return directory
