"""The one loader of YAML/JSON files (definitions and run configs): bounded, one-line errors.

A 1 KB YAML file can expand to gigabytes through aliases ("billion laughs"), nest deep enough to
exhaust the stack, or name a FIFO that blocks forever. Every file is therefore read only if it is
a regular file of at most `MAX_BYTES`, decoded as strict UTF-8, and its YAML node graph is
checked before any Python object is built: at most `MAX_DEPTH` levels and `MAX_NODES` nodes
*after* alias expansion (each alias counts as the whole subtree it stands for), no recursive
alias. JSON gets the same depth and size bounds. Every problem is a `DocumentError` whose
message is one line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from fsm.errors import FsmError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000


class DocumentError(FsmError, ValueError):
    """A definition or config file that cannot be read safely; the message is one line."""


def read_document(path: str | Path) -> Any:
    """Parse a YAML file (JSON if it ends in `.json`) within the bounds above."""
    file = Path(path)
    text = _read_text(file)
    if file.suffix == ".json":
        return parse_json(text, str(file))
    return parse_yaml(text, str(file))


def _read_text(file: Path) -> str:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DocumentError(f"cannot read {file}: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL in the path
        raise DocumentError(f"cannot read {str(file)!r}: not a valid path") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(f"cannot read {file}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise DocumentError(f"{file} is larger than {MAX_BYTES // 1024} KiB")
        chunks = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_BYTES:
                raise DocumentError(f"{file} is larger than {MAX_BYTES // 1024} KiB")
            chunks.append(chunk)
    except OSError as exc:
        raise DocumentError(f"cannot read {file}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{file} is not UTF-8 text (bad byte at offset {exc.start})") from exc


def parse_json(text: str, name: str = "<text>") -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise DocumentError(f"{name} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise DocumentError(f"{name} is not valid JSON: {_one_line(str(exc))}") from exc
    _check_value(value, name)
    return value


def _check_value(value: Any, name: str) -> None:
    """Depth and size of parsed JSON, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise DocumentError(f"{name} has more than {MAX_NODES} values")
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise DocumentError(f"{name} nests deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing to compose a node deeper than `MAX_DEPTH`.

    The composer recurses once per level: checking before the recursion keeps the stack small."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self._name = name
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise DocumentError(
                    f"{self._name} nests deeper than {MAX_DEPTH} levels (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, name: str = "<text>") -> Any:
    try:
        loader = _BoundedLoader(text, name)  # the reader refuses control characters here
    except yaml.YAMLError as exc:
        raise DocumentError(f"{name} is not valid YAML: {_one_line(str(exc))}") from exc
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, name)
        return loader.construct_document(node)
    except DocumentError:
        raise
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark is not None else ""
        problem = _one_line(exc.problem or exc.context or "malformed")
        raise DocumentError(f"{name} is not valid YAML: {problem}{where}") from exc
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise DocumentError(f"{name} is not valid YAML: {_one_line(str(exc))}") from exc
    finally:
        loader.dispose()


def _check_expansion(root: Node, name: str) -> None:
    """Count the nodes the document stands for once every alias is expanded (memoised, so the
    count itself is linear in the file), and refuse a recursive alias."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            if key in open_nodes:
                raise DocumentError(f"{name} has a recursive alias")
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise DocumentError(f"{name} has a recursive alias")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > MAX_NODES:
            raise DocumentError(
                f"{name} expands to more than {MAX_NODES} values (too many aliases)"
            )
        sizes[key] = total


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _one_line(text: str) -> str:
    return " ".join(text.split())
