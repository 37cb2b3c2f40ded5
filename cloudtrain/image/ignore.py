"""Docker's `.dockerignore` rules, read as the Docker CLI reads them: a staged context holds what Docker would send."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cloudtrain.errors import UserError, quoted

if TYPE_CHECKING:
    from cloudtrain.spec.models import ImageBuild

# ----------------------------------------------------------------------------------------------------------
# .dockerignore, with Docker's semantics (moby/patternmatcher: ignorefile.ReadAll + MatchesOrParentMatches)


def _go_clean(path: str) -> str:
    """Go's filepath.Clean on a slash path (Docker cleans every pattern with it)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    joined = "/".join(parts)
    return "/" + joined if rooted else joined or "."


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool  # a `!` pattern: it re-includes
    kind: Literal["exact", "prefix", "suffix", "regex"]
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str, exclusion: bool = False) -> _Pattern:
        """Docker's translation: `*` and `?` stop at `/`, `**` spans folders, `[...]` classes, `\\` escapes."""
        out: list[str] = []
        kind: Literal["exact", "prefix", "suffix", "regex"] = "exact"
        pos, n, step = 0, len(text), 0
        while pos < n:
            ch = text[pos]
            pos += 1
            if ch == "*":
                if pos < n and text[pos] == "*":
                    pos += 1
                    if pos < n and text[pos] == "/":
                        pos += 1
                    if pos >= n:
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            out.append(".*")
                            kind = "regex"
                    else:
                        out.append("(.*/)?")
                        kind = "regex"
                    if step == 0:
                        kind = "suffix"
                else:
                    out.append("[^/]*")
                    kind = "regex"
            elif ch == "?":
                out.append("[^/]")
                kind = "regex"
            elif ch in ".+()|{}$":
                out.append("\\" + ch)
            elif ch == "\\":
                if pos >= n:
                    raise ValueError("a pattern cannot end with a backslash")
                out.append("\\" + text[pos])
                pos += 1
                kind = "regex"
            elif ch in "[]":
                out.append(ch)
                kind = "regex"
            else:
                out.append(ch)
            step += 1
        try:
            regex = re.compile("".join(out))
        except re.error as e:
            raise ValueError(f"bad pattern ({e})") from None
        return cls(text, exclusion, kind, regex if kind == "regex" else None)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class IgnoreRules:
    """The patterns of a .dockerignore file; `excluded(path)` answers as Docker's builder does."""

    patterns: tuple[_Pattern, ...] = ()
    source: str | None = None

    @classmethod
    def parse(cls, text: str, source: str | None = None) -> IgnoreRules:
        """Docker's reading: `#` lines are comments, whitespace trimmed, paths cleaned, a leading `/` dropped."""
        patterns: list[_Pattern] = []
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.removesuffix("\r")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.startswith("#"):
                continue
            pattern = line.strip()
            if not pattern:
                continue
            invert = pattern.startswith("!")
            if invert:
                pattern = pattern[1:].strip()
            if pattern:
                pattern = _go_clean(pattern)
                if len(pattern) > 1 and pattern.startswith("/"):
                    pattern = pattern[1:]
            where = f"{source}:{number}" if source else f"line {number}"
            if invert and not pattern:
                raise UserError(f"{where}: illegal exclusion pattern '!'")
            try:
                patterns.append(_Pattern.compile(pattern, exclusion=invert))
            except ValueError as e:
                raise UserError(f"{where}: {quoted(line.strip())}: {e}") from None
        return cls(tuple(patterns), source)

    def excluded(self, path: str) -> bool:
        """Whether a context-relative slash path stays out: the last pattern matching it or a parent decides."""
        matched = False
        parent = posixpath_parent(path)
        parents = parent.split("/") if parent else []
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a `!` pattern can change an exclusion, and only a plain one an inclusion
            hit = pattern.match(path) or any(pattern.match("/".join(parents[: i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_under(self, folder: str) -> bool:
        """Whether a `!` pattern might re-include something inside an excluded folder (else skip walking it)."""
        parts = folder.split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            segments = pattern.text.split("/")
            relevant = True
            for i, part in enumerate(parts):
                if i >= len(segments) or "**" in segments[i]:
                    break
                try:
                    segment = _Pattern.compile(segments[i])
                except ValueError:
                    break  # cannot tell: walk the folder
                if not segment.match(part):
                    relevant = False
                    break
            if relevant:
                return True
        return False


def posixpath_parent(path: str) -> str:
    """The parent of a relative slash path, "" at the top (Go's filepath.Dir gives ".")."""
    return path.rpartition("/")[0]


def ignore_file_for(build: ImageBuild) -> Path | None:
    """The ignore file Docker's BuildKit reads: `<Dockerfile>.dockerignore` beside it, else the context's."""
    dockerfile = Path(build.dockerfile)
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    default = Path(build.context) / ".dockerignore"
    return default if default.is_file() else None
