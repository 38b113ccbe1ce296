"""Reading configuration YAML with the file, line and column of every key and value, and merging files.

Separate from the checks so that every later step (schema, semantics, typed values) can point a
problem at the exact place a user wrote it, without knowing anything about YAML.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def format_path(path: KeyPath) -> str:
    """`audiences.main.streams[0].sources[1].tag`; the document itself is `(root)`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            if not part.strip() or part != part.strip() or any(ch.isspace() for ch in part):
                # a blank key would vanish from the line, and spaces would split the key path
                part = json.dumps(part)
            text += f".{part}" if text else part
    return text or "(root)"


def _printable(text: str) -> str:
    """Control characters (a key or value holding CR, NUL, ESC...) escaped: one line stays one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def problem(where: Location, path: KeyPath | str, what: str, todo: str) -> str:
    """One problem line: `file:line:column key.path: what is wrong; what to do`."""
    shown = path if isinstance(path, str) else format_path(path)
    return _printable(f"{where} {shown}: {what}; {todo}")


@dataclass
class Document:
    """Plain data (dicts, lists, scalars) with the location of every value and every key."""

    data: Any
    values: dict[KeyPath, Location] = field(default_factory=dict)
    keys: dict[KeyPath, Location] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    # Scalars as typed, for hints: YAML reads `0719` as the number 465, but the user wrote 0719.
    texts: dict[KeyPath, str] = field(default_factory=dict)

    def at(self, path: KeyPath) -> Location:
        """Where the value at `path` was written, or the nearest enclosing place that exists."""
        for end in range(len(path), -1, -1):
            loc = self.values.get(path[:end])
            if loc is not None:
                return loc
        return Location(self.files[0] if self.files else "<config>", 1, 1)

    def key_at(self, path: KeyPath) -> Location:
        """Where the key naming `path` was written (for unknown keys), else where its value is."""
        return self.keys.get(path) or self.at(path)

    def checksum(self) -> str:
        """sha256 of the merged document as written (references unresolved), keys sorted."""
        text = json.dumps(self.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_files(path: Path) -> list[Path]:
    """The file itself, or every `*.yaml` directly in a directory (sorted; subdirectories not read)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".yaml" and p.is_file())
    return [path]


def _loc(name: str, mark: yaml.Mark) -> Location:
    return Location(name, mark.line + 1, mark.column + 1)


def _tab_problems(name: str, text: str) -> list[str]:
    """Tabs in indentation: PyYAML's own message for them is cryptic, so say it plainly, per line."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            found.append(problem(Location(name, number, indent.index("\t") + 1), "(yaml)",
                                 "tab character in indentation", "indent with spaces only"))
    return found


def _syntax_problem(name: str, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = _loc(name, mark) if mark is not None else Location(name, 1, 1)
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    if context:
        what = f"{what} ({context})"
    return problem(where, "(yaml)", f"YAML syntax error: {what}",
                   "check indentation, colons and quoting at this place")


def _character_problem(name: str, text: str, error: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow (a NUL, most control characters), at its line and column."""
    position = max(0, min(int(error.position), len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = error.character if isinstance(error.character, int) else ord(str(error.character)[:1] or "\0")
    return problem(Location(name, line, column), "(yaml)", f"character U+{code:04X} is not allowed in YAML",
                   "remove it, or write it as an escape inside a double-quoted string")


class _Reader:
    """Turns a composed node tree into plain data, recording locations and duplicate keys."""

    def __init__(self, name: str, loader: yaml.SafeLoader) -> None:
        self.name = name
        self.loader = loader
        self.doc = Document(data=None, files=[name])
        self.problems: list[str] = []

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc.values[path] = _loc(self.name, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, path + (i,)) for i, item in enumerate(node.value)]
        self.doc.texts[path] = str(node.value)
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = _loc(self.name, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(problem(where, path, "a key must be a plain name, not a list or mapping",
                                             "write the key as text"))
                continue
            # The key's text as written: YAML 1.1 would read `on:` as true and `1:` as a number.
            key = key_node.value
            child = path + (key,)
            if key in result:
                self.problems.append(problem(where, child, f"duplicate key (first at line {self.doc.keys[child].line})",
                                             "keep only one of them"))
                continue
            self.doc.keys[child] = where
            result[key] = self.read(value_node, child)
        return result


def read_file(path: Path, name: str) -> tuple[Document | None, list[str]]:
    """One YAML file as a Document; `None` and problem lines when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, [problem(Location(name, 1, 1), "(file)", f"cannot read the file ({error.__class__.__name__})",
                              "check that it exists and is UTF-8 text")]
    tabs = _tab_problems(name, text)
    if tabs:
        return None, tabs
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:  # raised while reading, before any node has a mark
        return None, [_character_problem(name, text, error)]
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(data={}, files=[name], values={(): Location(name, 1, 1)}), []
        reader = _Reader(name, loader)
        reader.doc.data = reader.read(node, ())
        return reader.doc, reader.problems
    except yaml.YAMLError as error:
        return None, [_syntax_problem(name, error)]
    finally:
        loader.dispose()


def merge(into: Document, other: Document) -> list[str]:
    """Deep-merge `other` into `into`: mappings merge, anything else set twice is a conflict."""
    into.files.extend(other.files)
    if not isinstance(into.data, dict) or not isinstance(other.data, dict):
        return []  # the caller reports a non-mapping document
    problems: list[str] = []
    _merge_mapping(into, other, into.data, other.data, (), problems)
    return problems


def _merge_mapping(into: Document, other: Document, target: dict[str, Any], source: dict[str, Any],
                   path: KeyPath, problems: list[str]) -> None:
    for key, value in source.items():
        child = path + (key,)
        if key not in target:
            target[key] = value
            _copy_locations(into, other, child)
        elif isinstance(target[key], dict) and isinstance(value, dict):
            _merge_mapping(into, other, target[key], value, child, problems)
        else:
            first = into.key_at(child)
            problems.append(problem(other.key_at(child), child, f"also set in {first}; only mappings merge across files",
                                    "set this key in one file only"))


def _copy_locations(into: Document, other: Document, prefix: KeyPath) -> None:
    size = len(prefix)
    for table_name in ("values", "keys", "texts"):
        source, target = getattr(other, table_name), getattr(into, table_name)
        for path, loc in source.items():
            if path[:size] == prefix:
                target[path] = loc


def load_documents(config_path: Path) -> tuple[Document | None, list[str]]:
    """Read and merge the config file or directory; problems cover every file at once.

    The document is None when a file could not be read or parsed (its problems say why)."""
    name_base = str(config_path)
    if not config_path.exists():
        return None, [problem(Location(name_base, 1, 1), "(file)", "no such file or directory",
                              "pass an existing YAML file or directory with --config")]
    files = config_files(config_path)
    if not files:
        return None, [problem(Location(name_base, 1, 1), "(file)", "the directory holds no *.yaml file",
                              "add a configuration file such as reconciler.yaml")]
    merged: Document | None = None
    problems: list[str] = []
    complete = True  # a file that cannot be read leaves the document incomplete: checking it would mislead
    for path in files:
        doc, found = read_file(path, str(path))
        problems.extend(found)
        if doc is None:
            complete = False
        elif not isinstance(doc.data, dict):
            complete = False
            problems.append(problem(doc.at(()), "(root)", "the file must hold a mapping of keys",
                                    "start the file with keys such as `version: 1`"))
        elif merged is None:
            merged = doc
        else:
            problems.extend(merge(merged, doc))
    return (merged if complete else None), problems


def walk_strings(data: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    """Every string value (not key) in the document, with its path."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from walk_strings(value, path + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from walk_strings(value, path + (index,))
    elif isinstance(data, str):
        yield path, data
