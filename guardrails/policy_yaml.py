"""YAML for policy files, with duplicate keys refused.

PyYAML keeps the last of two equal keys in a mapping without a word. In a policy that silently drops rules: a
second `pii:` added under `detectors:` replaces the first with all its settings, and a second `tenants:` in
routing.yml drops every tenant route above it. The loader here raises instead, naming both lines.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that holds the same key twice; `line` is the 1-based line of the second one."""

    def __init__(self, key: Any, first_line: int, line: int, mark: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r} (also on line {first_line}): YAML would keep only the "
                                 "last one and silently drop the other; merge them into one",
                         problem_mark=mark)
        self.key, self.first_line, self.line = key, first_line, line


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line, key_node.start_mark)
                seen[key] = line
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """`yaml.safe_load`, except that a mapping with a repeated key raises `DuplicateKeyError`."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
