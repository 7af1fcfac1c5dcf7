"""YAML parsing with a bound on the expanded document, against alias ("billion laughs") bombs.

PyYAML shares an aliased node instead of copying it, so a 1 KB file of nested aliases parses
quickly into a small graph that expands to billions of values as soon as anything walks it
(merging settings, JSON for a worker).  The composed graph is measured as if every alias were
copied, and refused before anything is built from it when it passes ``max_nodes``.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000


class YamlTooLarge(ValueError):
    """The document, with its aliases expanded, has more nodes than allowed."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(key, sizes) + _expanded_size(value, sizes)
                    for key, value in node.value)
    sizes[id(node)] = size
    return size


def load_bounded(text: str, max_nodes: int = MAX_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose expanded size passes ``max_nodes``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > max_nodes:
            raise YamlTooLarge(f"the document expands to {size} values through its aliases, "
                               f"more than {max_nodes}")
        return loader.construct_document(node)
    finally:
        loader.dispose()
