"""Reading a spec file: bounded, UTF-8, YAML with the line of every key remembered.

The loader bounds what a spec may cost (size, values, aliases, nesting), since it reads files a user may
have been handed, and rejects what PyYAML silently accepts (duplicate keys). The source map it builds lets
a validation error point at the line where the field was written.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloudtrain.errors import SpecError, one_line, quoted

# The loader's limits. A job spec is a page of YAML; these bound the time and memory a hostile or
# broken file can cost (a "billion laughs" expands a few hundred bytes into gigabytes).
MAX_SPEC_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_VALUES = 10_000  # keys and values; SageMaker itself takes at most 100 hyperparameters and 50 tags
MAX_DEPTH = 50

Loc = tuple[str | int, ...]  # a place in a document: mapping keys and list indices


def read_text(path: Path, shown: str) -> str:
    """The file's text, refusing what is not a small UTF-8 file before reading much of it."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise SpecError(shown, None, None, "no such file") from None
    except PermissionError:
        raise SpecError(shown, None, None, "cannot read the file: permission denied") from None
    except OSError as e:
        raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    if (problem := _unreadable(mode)) is not None:
        os.close(fd)
        raise SpecError(shown, None, None, problem)
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_SPEC_BYTES + 1)
        except OSError as e:
            raise SpecError(shown, None, None, f"cannot read the file: {e.strerror or e}") from None
    if len(raw) > MAX_SPEC_BYTES:  # grew since fstat
        raise SpecError(shown, None, None, _too_big(len(raw)))
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        raise SpecError(
            shown,
            raw.count(b"\n", 0, e.start) + 1,
            None,
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start - line_start + 1}",
        ) from None
    # YAML refuses control characters; say which and where rather than "unacceptable character #x0000".
    if bad := _CONTROL.search(text):
        line_start = text.rfind("\n", 0, bad.start()) + 1
        raise SpecError(
            shown,
            text.count("\n", 0, bad.start()) + 1,
            None,
            f"control character U+{ord(bad.group()):04X} at column {bad.start() - line_start + 1}",
        )
    return text


def _unreadable(mode: os.stat_result) -> str | None:
    """Why a file of this kind or size is not read, if it is not."""
    if stat.S_ISDIR(mode.st_mode):
        return "is a folder, not a spec file"
    if not stat.S_ISREG(mode.st_mode):
        return "is not a regular file"
    return _too_big(mode.st_size) if mode.st_size > MAX_SPEC_BYTES else None


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _too_big(size: int) -> str:
    mib = f"{size / (1 << 20):.1f} MiB"
    shown = f"{size} bytes" if mib == f"{MAX_SPEC_BYTES / (1 << 20):.1f} MiB" else mib
    return f"spec file is {shown}; the limit is {MAX_SPEC_BYTES >> 20} MiB"


@dataclass(frozen=True)
class _Entry:
    line: int  # 1-based line of a mapping's key or a list's item
    raw: str | None  # source text of a plain scalar value, to show what the user wrote (2.10, not 2.1)


@dataclass
class _Lines:
    line: int  # where the mapping or list starts
    entries: dict[str | int, _Entry] = field(default_factory=dict)


class SourceMap:
    """Where each key and item of a loaded document was written, to turn a field path into a line.

    Keyed by the identity of each dict and list (kept alive here, so identities stay unique); an
    alias shares its anchor's objects, so an error under an alias points at the anchored text.
    """

    def __init__(self) -> None:
        self.root_line = 1
        self._lines: dict[int, tuple[Any, _Lines]] = {}

    def add(self, obj: dict[str, Any] | list[Any], lines: _Lines) -> None:
        self._lines[id(obj)] = (obj, lines)

    def copied(self, copy: dict[str, Any] | list[Any], original: Any) -> None:
        """`copy` was written where `original` was."""
        if (lines := self.get(original)) is not None:
            self.add(copy, lines)

    def get(self, obj: Any) -> _Lines | None:
        found = self._lines.get(id(obj))
        return found[1] if found else None

    def locate(self, data: Any, loc: Loc) -> tuple[int, str | None, int]:
        """Line of the deepest part of `loc` written in the file, the raw text there, and how many parts that is."""
        line, raw, cur = self.root_line, None, data
        for depth, seg in enumerate(loc):
            lines = self.get(cur)
            entry = lines.entries.get(seg) if lines else None
            if entry is None:
                return line, None, depth
            line, raw, cur = entry.line, entry.raw, cur[seg]
        return line, raw, len(loc)


@dataclass
class _Frame:
    """A mapping or list being built from parser events."""

    obj: dict[str, Any] | list[Any]
    lines: _Lines
    path: Loc
    anchor: str | None
    key: str | None = None  # a mapping's key waiting for its value
    key_line: int = 0
    merging: bool = False  # the waiting key is `<<`
    merges: list[tuple[Any, int]] = field(default_factory=list)
    merge_line: int | None = None
    size: int = 1  # keys and values in the subtree, aliases expanded
    height: int = 1  # levels of nesting, this one included


@dataclass(frozen=True)
class _Anchor:
    value: Any
    size: int
    height: int
    raw: str | None


_BaseLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
_PLAIN_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class SpecLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, building the document itself from parser events.

    PyYAML keeps the last of duplicate keys without a word, expands aliases without limit and drops
    line numbers; a job spec wants none of that. Building from events (iteratively, so deep nesting
    cannot exhaust the stack) records each key's line, refuses duplicates and counts values as
    aliases would expand them. Mapping keys stay the text written (`NO:` is the key "NO", not False).
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.text = text
        self.source = SourceMap()
        self._anchors: dict[str, _Anchor] = {}
        self._values = 0
        self._aliases = 0

    def load(self) -> Any:
        """The single document in the text (None when there is none), or one SpecError."""
        try:
            return self._document()
        except yaml.MarkedYAMLError as e:
            raise self._yaml_error(e) from None
        except yaml.YAMLError as e:  # a ReaderError has no mark; the text was checked, so rare
            raise SpecError(self.file, None, None, f"invalid YAML: {one_line(str(e))}") from None
        finally:
            self.dispose()

    def _document(self) -> Any:
        self.get_event()  # StreamStartEvent
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # DocumentStartEvent
        if self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent, yaml.AliasEvent):
            self.source.root_line = self.peek_event().start_mark.line + 1
        root = self._build()
        self.get_event()  # DocumentEndEvent
        if not self.check_event(yaml.StreamEndEvent):
            second = self.get_event()
            raise self._fail(second.start_mark, (), "a spec is one YAML document; remove the second '---'")
        return root

    def _build(self) -> Any:
        stack: list[_Frame] = []
        while True:
            event = self.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                path = self._child_path(stack, event, "a mapping or list")
                if len(stack) >= MAX_DEPTH:
                    raise self._fail(event.start_mark, path, f"nested more than {MAX_DEPTH} levels deep")
                if event.tag not in _PLAIN_COLLECTION_TAGS:
                    raise self._fail(event.start_mark, path, f"the tag {quoted(event.tag)} is not supported")
                self._count(1, event, path, alias=False)
                obj: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
                frame = _Frame(obj, _Lines(line), path, event.anchor)
                self.source.add(obj, frame.lines)
                stack.append(frame)
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()
                if isinstance(done.obj, dict):
                    self._merge(done)
                value, size, height, raw, line = done.obj, done.size, done.height, None, done.lines.line
                if done.anchor is not None:
                    self._anchors[done.anchor] = _Anchor(value, size, height, None)
            elif isinstance(event, yaml.ScalarEvent):
                top = stack[-1] if stack else None
                if top is not None and isinstance(top.obj, dict) and top.key is None:
                    self._count(1, event, (*top.path, event.value), alias=False)
                    top.size += 1
                    self._key(top, event)
                    continue
                path = self._child_path(stack, event, "a value")
                value, size, height = self._scalar(event, path), 1, 0
                raw = event.value if not event.style else None  # plain: None here, '' from libyaml
                self._count(1, event, path, alias=False)
                if event.anchor is not None:
                    self._anchors[event.anchor] = _Anchor(value, 1, 0, raw)
            elif isinstance(event, yaml.AliasEvent):
                path = self._child_path(stack, event, "an alias")
                anchor = self._anchors.get(event.anchor)
                if anchor is None:
                    open_anchors = {f.anchor for f in stack}
                    problem = "refers to a mapping or list that contains it" if event.anchor in open_anchors else ""
                    raise self._fail(event.start_mark, path, f"alias *{event.anchor} {problem or 'is not defined'}")
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise self._fail(event.start_mark, path, f"more than {MAX_ALIASES} aliases; write the values out")
                if len(stack) + anchor.height > MAX_DEPTH:
                    raise self._fail(event.start_mark, path, f"alias *{event.anchor} nests deeper than {MAX_DEPTH}")
                self._count(anchor.size, event, path, alias=True)
                value, size, height, raw = anchor.value, anchor.size, anchor.height, anchor.raw
            else:  # the parser yields nothing else inside a document
                raise self._fail(event.start_mark, (), f"unexpected {type(event).__name__}")
            if not stack:
                return value
            self._add(stack[-1], value, size, height, raw, line, event)

    def _key(self, frame: _Frame, event: yaml.ScalarEvent) -> None:
        """Take a mapping key: its text, refused if the mapping has it already."""
        line = event.start_mark.line + 1
        merging = not event.style and event.tag is None and event.value == "<<"
        if merging:
            first = frame.merge_line
            frame.merge_line = line
        else:
            entry = frame.lines.entries.get(event.value) if event.value in frame.obj else None
            first = entry.line if entry else None
        if first is not None:
            raise self._fail(event.start_mark, (*frame.path, event.value), f"duplicate key (first at line {first})")
        frame.key, frame.key_line, frame.merging = event.value, line, merging

    def _add(self, frame: _Frame, value: Any, size: int, height: int, raw: str | None, line: int, event: Any) -> None:
        frame.size += size
        frame.height = max(frame.height, height + 1)
        if isinstance(frame.obj, list):
            frame.lines.entries[len(frame.obj)] = _Entry(line, raw)
            frame.obj.append(value)
            return
        key, frame.key = frame.key, None
        assert key is not None
        if frame.merging:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise self._fail(event.start_mark, (*frame.path, "<<"), "merges a mapping or a list of mappings")
            frame.merges.extend((s, frame.key_line) for s in sources)
            return
        frame.obj[key] = value
        frame.lines.entries[key] = _Entry(frame.key_line, raw)

    def _merge(self, frame: _Frame) -> None:
        """Apply `<<` merges: keys written in the mapping win, then earlier merged mappings."""
        obj = frame.obj
        assert isinstance(obj, dict)
        for source, line in frame.merges:
            lines = self.source.get(source)
            for key, value in source.items():
                if key not in obj:
                    obj[key] = value
                    frame.lines.entries[key] = lines.entries[key] if lines else _Entry(line, None)

    def _scalar(self, event: yaml.ScalarEvent, path: Loc) -> Any:
        tag = event.tag
        if tag in (None, "!"):
            tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            value = self.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self._fail(event.start_mark, path, f"the tag {quoted(tag)} is not supported") from None
        except (ValueError, OverflowError) as e:  # an int of 5000 digits, a bad !!binary or timestamp
            reason = "too many digits" if "digits" in str(e) else one_line(str(e))
            raise self._fail(event.start_mark, path, f"cannot read {quoted(event.value, 40)}: {reason}") from None
        self.constructed_objects.pop(node, None)
        return value

    def _count(self, n: int, event: Any, path: Loc, *, alias: bool) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            what = f"aliases expand the spec to more than {MAX_VALUES} values" if alias else ""
            raise self._fail(
                event.start_mark, path, what or f"more than {MAX_VALUES} keys and values; too big for a spec"
            )

    def _child_path(self, stack: list[_Frame], event: Any, what: str) -> Loc:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.obj, list):
            return (*top.path, len(top.obj))
        if top.key is None:
            raise self._fail(event.start_mark, top.path, f"a key must be plain text, not {what}")
        return (*top.path, top.key)

    def _fail(self, mark: Any, path: Loc, message: str) -> SpecError:
        return SpecError(self.file, mark.line + 1, dotted_path(path) or None, message)

    def _yaml_error(self, e: yaml.MarkedYAMLError) -> SpecError:
        mark = e.problem_mark or e.context_mark
        context = e.context or ""
        if e.context_mark is not None and ("simple key" in context or "quoted scalar" in context):
            mark = e.context_mark  # where the unfinished key or string began, not where the parser gave up
        line = mark.line + 1 if mark is not None else None
        text_line = self._line_text(line)
        indentation = text_line[: len(text_line) - len(text_line.lstrip(" \t"))]
        column = e.problem_mark.column if mark is e.problem_mark and mark is not None else -1
        if "\t" in indentation or text_line[column : column + 1] == "\t":
            message = "a tab character; YAML indents with spaces only"
        elif "maximum nesting depth" in (e.problem or ""):  # libyaml 0.2.6+ scans ahead and stops first
            message = f"nested more than {MAX_DEPTH} levels deep"
        else:
            message = f"invalid YAML: {one_line(e.problem or context or 'syntax error')}"
            if context and e.context_mark is not None and e.context_mark.line + 1 != line:
                message += f" ({one_line(context)} at line {e.context_mark.line + 1})"
        return SpecError(self.file, line, _key_path_near(self.text, line) if line else None, message)

    def _line_text(self, line: int | None) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if line and 0 < line <= len(lines) else ""


def dotted_path(path: Loc) -> str:
    """A field's place as one short line, whatever its keys hold (newlines, line separators, megabytes)."""
    return ".".join(short(_printable(str(p))) for p in path)


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)[1:-1]


_KEY_LINE = re.compile(r"""^("[^"]*"|'[^']*'|[^\s#'"{}\[\],&*!|>%@`-][^#]*?|-[^\s#][^#]*?)\s*:(?:\s|$)""")

_BARE_WORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)\s*$")  # `code` missing its colon


def _key_path_near(text: str, line: int) -> str | None:
    """Best guess of the field at `line` from indentation, for syntax errors (there is no document to ask).

    Follows block mappings and `- ` items, which is how specs are written; None when it cannot tell.
    """
    levels: list[list[Any]] = []  # open levels: [indent, key or index, is a list item, items under it so far]
    for number, text_line in enumerate(text.splitlines()[:line], start=1):
        body = text_line.expandtabs(8)
        rest = body.lstrip(" ")
        if not rest or rest.startswith(("#", "---", "...")):
            continue
        indent = len(body) - len(rest)
        while rest == "-" or rest.startswith("- "):
            while levels and (levels[-1][0] > indent or (levels[-1][0] == indent and levels[-1][2])):
                levels.pop()
            if not levels:
                return None  # a top-level list: no field names to give
            levels.append([indent, levels[-1][3], True, 0])
            levels[-2][3] += 1
            after = rest[1:].lstrip(" ")
            indent += len(rest) - len(after)
            rest = after
        key = _KEY_LINE.match(rest) or (_BARE_WORD.match(rest) if number == line else None)
        if key is None and number < line:
            continue  # a value's continuation
        while levels and levels[-1][0] >= indent:
            levels.pop()
        if key is not None:
            levels.append([indent, key.group(1).strip("'\""), False, 0])
    return dotted_path(tuple(level[1] for level in levels)) or None


def kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
