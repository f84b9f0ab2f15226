"""Read a YAML file a user can supply, refusing hostile ones before anything copies them.

Every YAML cogvid reads from a user (``--config`` files, the model registries, a LoRA run's
``training_config.yaml``) goes through :func:`read_yaml`. It refuses, with a ConfigError naming
the file and the reason:

- a file over :data:`MAX_BYTES` (checked on the bytes read, so a pipe or device cannot stream on);
- a document of more than :data:`MAX_NODES` nodes counted with every alias (``*name``) expanded
  to the nodes it repeats: a "billion laughs" file of a few hundred bytes expands to billions of
  values, which OmegaConf (or ``str()``) would copy out one by one;
- a recursive alias and nesting deeper than :data:`MAX_DEPTH`.

Nodes are counted while PyYAML composes the document, so the count stops the parse early; the
Python objects are built only for a document that passed. Malformed YAML keeps its file:line:column.
Nothing here imports OmegaConf or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from cogvid.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB; the largest bundled YAML is under 5 KiB
# The released model configs have 270-310 nodes, the bundled registry about 260. Pure-Python
# PyYAML composes about 25k nodes a second and OmegaConf creates about 10k (100k nodes: 10 s to
# create, 8 s more to merge) on one core of the dev machine, so at this limit a refusal comes in
# under half a second and the slowest accepted file costs about two.
MAX_NODES = 10_000
MAX_DEPTH = 64  # the released configs nest 10 levels deep


class _Refused(Exception):
    """Raised inside the loader to stop composing; turned into a ConfigError by :func:`read_yaml`."""

    def __init__(self, reason: str, mark: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts composed nodes with aliases expanded and stops at the limits."""

    def __init__(self, stream: str, max_nodes: int, max_depth: int) -> None:
        super().__init__(stream)
        self.max_nodes, self.max_depth = max_nodes, max_depth
        self.expanded = 0  # nodes composed so far, each alias counted as the size of its anchor
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once complete

    def _grow(self, count: int, mark: Any) -> None:
        self.expanded += count
        if self.expanded > self.max_nodes:
            raise _Refused(
                f"the document expands to more than {self.max_nodes:,} values (aliases `*name` counted "
                "as the values they repeat), which is out of proportion for a configuration",
                mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is PyYAML's own error below
                size = self.sizes.get(id(target))
                if size is None:
                    raise _Refused(f"the alias *{event.anchor} refers to a node that contains it (a recursive alias)", event.start_mark)
                self._grow(size, event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()
        if self.depth >= self.max_depth:
            raise _Refused(f"values are nested more than {self.max_depth} levels deep", event.start_mark)
        before = self.expanded
        self._grow(1, event.start_mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if event.anchor is not None:
            self.sizes[id(node)] = self.expanded - before
        return node


def _where(source: str | Path, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(source)


_REFUSED_HINT = (
    "cogvid's own configs have a few hundred values; if the file is yours, write the values out "
    "instead of chaining aliases, or split it"
)


def _load_bounded(text: str, max_nodes: int, max_depth: int) -> Any:
    """Compose within the limits (raises _Refused or yaml.YAMLError), then build the Python data."""
    loader = _BoundedLoader(text, max_nodes, max_depth)
    try:
        node = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    except RecursionError:  # belt and braces: max_depth stops nesting long before Python's limit
        raise _Refused("values are nested too deeply", None) from None
    finally:
        loader.dispose()


def parse_yaml(
    text: str, source: str | Path, what: str = "config file", max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse one YAML document (``None`` when empty) within the node and depth limits.

    ``source`` (a path) and ``what`` (its role: "config file", "model registry") name the text
    in a ConfigError.
    """
    try:
        return _load_bounded(text, max_nodes, max_depth)
    except _Refused as e:
        raise ConfigError(f"refused {what} {_where(source, e.mark)}: {e.reason}", hint=_REFUSED_HINT) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"malformed YAML in {_where(source, mark)}: {problem}",
            hint="fix the YAML syntax at that line (indentation, a missing ':' or quote)",
        ) from e


def parse_value(text: str, source: str) -> Any:
    """A ``--set`` value read as YAML (``3`` an int, ``[1, 2]`` a list), or ``text`` itself when it is not YAML.

    The node and depth limits apply: a refused value is a ConfigError naming ``source``.
    """
    try:
        return _load_bounded(text, MAX_NODES, MAX_DEPTH)
    except _Refused as e:
        raise ConfigError(f"refused {source}: {e.reason}", hint=_REFUSED_HINT) from None
    except yaml.YAMLError:
        return text


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The data of the YAML file at ``path`` (``None`` when empty), or a ConfigError naming it.

    ``what`` names the file's role in messages ("config file", "model registry", ...).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(raw) > MAX_BYTES:
        raise ConfigError(
            f"refused {what} {path}: it is larger than {MAX_BYTES // (1 << 20)} MiB ({MAX_BYTES:,} bytes)",
            hint="a cogvid configuration is a few KiB; check that this is the file you meant",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read {what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    return parse_yaml(text, path, what)
