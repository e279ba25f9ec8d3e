"""Line-aware, bounded YAML reading for manifests.

PyYAML's loaders forget where a value came from; we need the line and column of every field so an
error can point at it. So we only *compose* with the safe loader (libyaml when available), then
build plain data ourselves from the node graph, recording each node's mark. Building it ourselves
is also where the safety limits live: the file size is checked before parsing, and every node
visited (aliases included) is counted, so a "billion laughs" document is refused instead of
expanding in memory. Nothing here can run code: only the safe composer and safe scalar constructor.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_FILE_BYTES = 8 * 1024 * 1024  # a 10,000-device fleet is ~2 MB; anything bigger is a mistake
MAX_NODES = 1_000_000  # expanded nodes per document, aliases included
MAX_ALIAS_NODES = 200_000  # expanded nodes reached *through aliases*: 10k devices sharing `<<: *defaults` fit; bombs do not
MAX_DEPTH = 200

Path_ = tuple  # a field path: keys (str) and list indices (int)


class SourceError(Exception):
    """The file cannot be read as YAML at all. Carries a 1-based line/col (0 when not applicable)."""

    def __init__(self, message: str, line: int = 0, col: int = 0, hint: str = ""):
        self.message = message
        self.line = line
        self.col = col
        self.hint = hint
        super().__init__(message)


@dataclass
class Issue:
    """A problem found while building data (duplicate key, non-scalar key): reported, not fatal."""

    path: tuple
    line: int
    col: int
    message: str
    hint: str = ""


@dataclass
class YamlDocument:
    """One YAML document: its plain data and where each field of it was written."""

    data: Any
    index: int
    line: int  # where the document starts (1-based)
    value_marks: dict = field(default_factory=dict)  # path -> (line, col) of the value
    key_marks: dict = field(default_factory=dict)  # path -> (line, col) of the mapping key
    issues: list = field(default_factory=list)

    def where(self, path: tuple, *, key: bool = False) -> tuple[int, int]:
        """(line, col) of `path`, or of its nearest ancestor the YAML has a mark for."""
        path = tuple(path)
        while True:
            if key and path in self.key_marks:
                return self.key_marks[path]
            if path in self.value_marks:
                return self.value_marks[path]
            if not path:
                return (self.line, 1)
            path = path[:-1]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


_PLAIN_TAGS = {yaml.SequenceNode: "tag:yaml.org,2002:seq", yaml.MappingNode: "tag:yaml.org,2002:map"}


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _Loader(_BaseLoader):
    """The safe loader, used only to compose nodes and construct plain scalars."""


def read_text(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """Read a manifest as UTF-8 text, refusing what is not a small text file *before* parsing it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError("file not found", hint="check the path") from None
    except OSError as err:
        raise SourceError(f"cannot read file: {err.strerror}") from None
    if path.is_dir():
        raise SourceError("is a directory, not a manifest file", hint=f"pass the YAML files, e.g. {path}/*.yaml")
    if st.st_size > max_bytes:
        raise SourceError(
            f"file is {st.st_size / 1048576:.1f} MB, over the {max_bytes // 1048576} MB manifest size limit",
            hint="a manifest should be small; split it or reference data files",
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as err:
        raise SourceError(f"cannot read file: {err.strerror}") from None
    if len(raw) > max_bytes:  # grew between stat and read, or a special file
        raise SourceError(f"file is over the {max_bytes // 1048576} MB manifest size limit")
    if b"\x00" in raw:
        raise SourceError("binary file, not YAML text (contains NUL bytes)", hint="pass a .yaml manifest")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        col = err.start - raw.rfind(b"\n", 0, err.start)
        raise SourceError(f"not UTF-8 text (invalid byte 0x{raw[err.start]:02x})", line=line, col=col,
                          hint="manifests must be UTF-8 YAML") from None
    return text


def _yaml_error(err: yaml.YAMLError) -> SourceError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is not None:
        return SourceError(message, mark.line + 1, mark.column + 1, hint="fix the YAML syntax here")
    return SourceError(message, hint="fix the YAML syntax")


class _Builder:
    """Turns a composed node graph into plain data, counting every node a reader would walk.

    A node reached again through an alias is not rebuilt: its value is shared (as with
    yaml.safe_load) and its expanded size is added to the count, so a "billion laughs" bomb is
    refused after building each distinct node once, in milliseconds.
    """

    def __init__(self, loader: _Loader, doc: YamlDocument):
        self.loader = loader
        self.doc = doc
        self.nodes = 0  # expanded size so far: what schema checks and consumers will walk
        self.alias_nodes = 0  # of which reached through aliases
        self.built: dict[int, tuple[Any, int]] = {}  # id(node) -> (value, expanded size)
        self.stack: set[int] = set()  # nodes being built: meeting one again is a recursive alias

    def build(self, node: yaml.Node, path: tuple) -> Any:
        nid = id(node)
        if nid in self.stack:
            raise SourceError("recursive alias (a value contains itself)", *_mark(node),
                              hint="remove the self-referencing anchor")
        if path not in self.doc.value_marks:
            self.doc.value_marks[path] = _mark(node)
        if nid in self.built:
            value, size = self.built[nid]
            self.alias_nodes += size
            self.nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise SourceError(
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (a YAML bomb?)",
                    *_mark(node), hint="refusing to expand; write the values out or use fewer aliases")
            self._check_size(node)
            return value
        if len(path) > MAX_DEPTH:
            raise SourceError(f"nesting deeper than {MAX_DEPTH} levels", *_mark(node))
        start = self.nodes
        self.nodes += 1
        self._check_size(node)
        if isinstance(node, yaml.ScalarNode):
            value = self._scalar(node, path)
        else:
            if node.tag != _PLAIN_TAGS[type(node)]:
                line, col = _mark(node)
                self.doc.issues.append(Issue(path, line, col, f"unsupported tag {_short_tag(node.tag)!r}",
                                             "only plain mappings, lists and scalars are allowed"))
            self.stack.add(nid)
            try:
                if isinstance(node, yaml.SequenceNode):
                    value = [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
                else:
                    value = self._mapping(node, path)
            finally:
                self.stack.discard(nid)
        self.built[nid] = (value, self.nodes - start)
        return value

    def _check_size(self, node: yaml.Node) -> None:
        if self.nodes > MAX_NODES:
            raise SourceError(f"document expands to more than {MAX_NODES} nodes", *_mark(node),
                              hint="split the manifest")

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as err:
            line, col = _mark(node)
            self.doc.issues.append(Issue(path, line, col, f"unsupported value: {err.problem}",
                                         "only plain strings, numbers, booleans and null are allowed"))
            return node.value
        if isinstance(value, (datetime.date, datetime.datetime)):
            return node.value  # dates stay the text the user wrote: JSON Schema has no date type
        if isinstance(value, bytes):
            line, col = _mark(node)
            self.doc.issues.append(Issue(path, line, col, "binary (!!binary) values are not allowed"))
            return node.value
        return value  # .nan / .inf are refused by schema_check.schema_problems, at this line

    def _mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        try:
            self.loader.flatten_mapping(node)  # resolves `<<:` merge keys in place (merged pairs first)
        except yaml.constructor.ConstructorError as err:
            raise SourceError(f"invalid merge key: {err.problem}", *_mark(node)) from None
        result: dict = {}
        merged: set = set()  # keys that came from `<<:`: the mapping's own keys override them
        for key_node, value_node in node.value:
            line, col = _mark(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.issues.append(Issue(path, line, col, "mapping keys must be plain strings",
                                             "a list or mapping cannot be a key"))
                continue
            key = key_node.value
            child = path + (key,)
            if key in result and key in merged:
                merged.discard(key)
                del result[key]
                self.doc.key_marks.pop(child, None)
                for marks in (self.doc.key_marks, self.doc.value_marks):
                    for stale in [p for p in marks if p[: len(child)] == child]:
                        del marks[stale]
            if key in result:
                first = self.doc.key_marks.get(child, (0, 0))
                self.doc.issues.append(Issue(child, line, col, f"duplicate key '{key}'",
                                             f"first set at line {first[0]}; remove one"))
                continue
            if child not in self.doc.key_marks:
                self.doc.key_marks[child] = (line, col)
            result[key] = self.build(value_node, child)
            if id(key_node) not in own:
                merged.add(key)
        return result


def _check_depth(text: str) -> None:
    """Refuse deep nesting before composing: libyaml's composer recurses in C per nesting level,
    and `[[[[...` a few hundred KB deep overflows the process stack (a crash no `except` can catch).
    The event parser keeps its own stack, so scanning events first is safe and cheap."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SourceError(f"nesting deeper than {MAX_DEPTH} levels", *_mark(event),
                                  hint="flatten the structure")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_documents(text: str) -> list[YamlDocument]:
    """Parse every `---` document of `text`. Empty documents are skipped. Raises SourceError."""
    try:
        _check_depth(text)
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None
    loader = _Loader(text)
    docs: list[YamlDocument] = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = YamlDocument(data=None, index=index, line=node.start_mark.line + 1)
            builder = _Builder(loader, doc)
            doc.data = builder.build(node, ())
            if doc.data is not None:
                docs.append(doc)
                index += 1
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None
    except RecursionError:
        raise SourceError(f"nesting too deep to parse (over {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()
    return docs


def load_yaml_file(path: Path | str) -> list[YamlDocument]:
    """Read and parse a manifest file with all safety limits. Raises SourceError."""
    path = Path(os.fspath(path))
    text = read_text(path)
    if not text.strip():
        raise SourceError("file is empty", hint="a manifest needs apiVersion, kind and metadata")
    docs = parse_documents(text)
    if not docs:
        raise SourceError("no YAML document in file (only comments or empty documents)",
                          hint="a manifest needs apiVersion, kind and metadata")
    return docs
