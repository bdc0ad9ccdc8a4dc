"""YAML read with limits: configs (`--config FILE`) and option values are YAML, and YAML aliases nest, so a
file of a few hundred bytes can stand for billions of values ("billion laughs"). PyYAML builds such a file as
shared objects in an instant, but everything that walks the result afterwards (jsonargparse's checks, copies,
dumps) expands it and never finishes. Each document is composed first and refused, in milliseconds, when its
expanded size or nesting is beyond anything a config needs."""

from __future__ import annotations

from pathlib import Path

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


def _duplicate_key(node, depth: int = 0):
    """The first mapping key given twice under `node`, as (key, line), or None."""
    import yaml

    if depth > MAX_DEPTH:
        return None  # check_yaml_size refuses it
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in seen:
                    return key.value, key.start_mark.line + 1
                seen.add(key.value)
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    for child in children:
        found = _duplicate_key(child, depth + 1)
        if found is not None:
            return found
    return None


def _config_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(argv: list[str]) -> None:
    """Each `--config FILE` of `argv` that exists, checked before jsonargparse reads it, so that the error names
    the file: text (UTF-8), not empty, indented with spaces (YAML refuses tabs with an error naming neither), no
    key given twice (YAML keeps the last one silently), and within `check_yaml_size`'s limits."""
    import yaml
    from jsonargparse._loaders_dumpers import get_yaml_default_loader

    for name in _config_paths(argv):
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse names a missing file or a folder itself
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidValue(f"--config {name} is not a YAML text file (not UTF-8: {err.reason})") from None
        try:
            check_yaml_size(text)
        except InvalidValue as err:
            raise InvalidValue(f"--config {name}: {err}") from None
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            indent = line[: len(line) - len(line.lstrip())]
            if "\t" in indent and line.strip() and not line.lstrip().startswith("#"):
                raise InvalidValue(f"--config {name}, line {number}: indented with a tab; YAML indents with spaces")
        if all(not line.strip() or line.lstrip().startswith("#") for line in lines):
            raise InvalidValue(f"--config {name} is empty: it sets no option")
        try:
            root = yaml.compose(text, Loader=get_yaml_default_loader())
        except yaml.YAMLError:
            continue  # the loader's own error says where
        except RecursionError:
            raise InvalidValue(f"--config {name}: the YAML is nested more than {MAX_DEPTH} levels deep") from None
        found = _duplicate_key(root) if root is not None else None
        if found is not None:
            key, line = found
            raise InvalidValue(f"--config {name}, line {line}: the key {key!r} is given twice (YAML keeps the last)")
