"""YAML read with limits: configs (`--config FILE`) and option values are YAML, and YAML aliases nest, so a
file of a few hundred bytes can stand for billions of values ("billion laughs"). PyYAML builds such a file as
shared objects in an instant, but everything that walks the result afterwards (jsonargparse's checks, copies,
dumps) expands it and never finishes. Each document is composed first and refused, in milliseconds, when its
expanded size or nesting is beyond anything a config needs."""

from __future__ import annotations

from lightning_gd.errors import InvalidValue

MAX_NODES = 100_000  # values after expanding aliases: the largest shipped config has a few hundred
MAX_DEPTH = 64  # nested lists and mappings
MAX_CHARS = 10_000_000


def _expanded_size(node, depth: int, sizes: dict[int, int]) -> int:
    """Nodes under `node` with every alias expanded; each shared node is counted once per use, computed once."""
    import yaml

    if depth > MAX_DEPTH:
        raise InvalidValue(f"the YAML is nested more than {MAX_DEPTH} levels deep")
    key = id(node)
    if key not in sizes:
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        sizes[key] = 1 + sum(_expanded_size(child, depth + 1, sizes) for child in children)
    return sizes[key]


def check_yaml_size(text: str) -> None:
    """A user error when `text`, with its aliases expanded, is larger or deeper than a config can be; YAML that
    does not parse is left to the loader's own error."""
    import yaml
    from jsonargparse._loaders_dumpers import get_yaml_default_loader

    if len(text) > MAX_CHARS:
        raise InvalidValue(f"the YAML is {len(text):,} characters long; configs are limited to {MAX_CHARS:,}")
    if "&" not in text and len(text) < 1000:  # no anchor, so no alias, and too short to nest deeply
        return
    try:
        root = yaml.compose(text, Loader=get_yaml_default_loader())
    except yaml.YAMLError:
        return
    except RecursionError:
        raise InvalidValue(f"the YAML is nested more than {MAX_DEPTH} levels deep") from None
    if root is not None and _expanded_size(root, 0, {}) > MAX_NODES:
        raise InvalidValue(
            f"the YAML expands to more than {MAX_NODES:,} values through its aliases (&anchor / *alias): refused "
            "(nested aliases can stand for billions of values)"
        )


def install_bounded_yaml() -> None:
    """Make jsonargparse (the project's subcommands and LightningCLI alike) check each YAML text first."""
    import yaml
    from jsonargparse import set_loader
    from jsonargparse._loaders_dumpers import loaders, yaml_load

    if getattr(loaders.get("yaml"), "bounded", False):
        return

    def bounded_yaml_load(text: str):
        if isinstance(text, str):
            check_yaml_size(text)
        return yaml_load(text)

    bounded_yaml_load.bounded = True
    set_loader("yaml", bounded_yaml_load, exceptions=(yaml.YAMLError,))
