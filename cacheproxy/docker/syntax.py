"""Dockerfile text as BuildKit reads it: instruction boundaries and shell words.

The instruction rules follow BuildKit's parser (``moby/buildkit``
``frontend/dockerfile/parser``): the ``# escape=`` directive, continuation lines, comment and
empty lines inside a continuation (dropped), and heredocs (``<<EOF``, ``<<-EOF``, quoted
names) on RUN, COPY and ADD. ``tests/docker/test_rewrite.py`` holds this module to that parser (the
``dockerfile`` package wraps it) over the corpus in ``tests/docker/dockerfiles``.

Why not a parser package at run time: dockerfile-parse (pure Python) does not know heredocs
(it reads a heredoc body as instructions), and ``dockerfile`` (BuildKit's Go parser) has
wheels only for x86-64 Linux and Windows, so installing cacheproxy would need a Go
toolchain on ARM servers and Macs. Shell text is read by a small POSIX-shell word reader
(quotes, escapes, operators, comments, ``$(...)``), enough to find the commands of a RUN.
Every offset is kept, so a rewrite can change a word without touching anything else.
"""

import re
from dataclasses import dataclass


class DockerfileError(ValueError):
    """The Dockerfile cannot be read (an unterminated heredoc)."""


# -- shell words -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Word:
    value: str  # with quotes and escapes removed
    start: int
    end: int


_OPERATORS = ("&&", "||", ";;", "|&", ";", "|", "&", "(", ")")
HEREDOC = re.compile(r"^\d*<<(-?)(.*)$")


def shell_words(s: str) -> tuple[list[list[Word]], list[tuple[str, bool]]]:
    """Simple commands (lists of words) of shell text, and its heredocs (name, strip tabs).

    Heredoc bodies inside ``s`` (a RUN heredoc script) are skipped.
    """
    commands: list[list[Word]] = [[]]
    heredocs: list[tuple[str, bool]] = []
    pending: list[tuple[str, bool]] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t\r" or s.startswith("\\\n", i):
            i += 1 if c != "\\" else 2
        elif c == "\n":
            commands.append([])
            i += 1
            for name, strip in pending:  # bodies start on the next line
                while i < n:
                    end = s.find("\n", i)
                    line = s[i : n if end < 0 else end]
                    i = n if end < 0 else end + 1
                    if (line.lstrip("\t") if strip else line).rstrip("\r") == name:
                        break
            pending = []
        elif c == "#":
            end = s.find("\n", i)
            i = n if end < 0 else end
        elif op := next((o for o in _OPERATORS if s.startswith(o, i)), None):
            commands.append([])
            i += len(op)
        else:
            word, i = _read_word(s, i)
            commands[-1].append(word)
            m = HEREDOC.match(word.value)
            if m and not word.value.lstrip("0123456789").startswith("<<<"):
                name = m.group(2) or ""
                if not name and i < n:  # "<< EOF": the name is the next word
                    nxt = re.match(r"[ \t]*", s[i:])
                    j = i + (nxt.end() if nxt else 0)
                    if j < n and s[j] not in "\n;&|()":
                        name_word, i = _read_word(s, j)
                        commands[-1].append(name_word)
                        name = name_word.value
                if name:
                    heredocs.append((name, m.group(1) == "-"))
                    pending.append(heredocs[-1])
    return [c for c in commands if c], heredocs


def _read_word(s: str, i: int) -> tuple[Word, int]:
    start, out, n = i, [], len(s)
    while i < n and s[i] not in " \t\r\n;&|()":
        c = s[i]
        if c == "\\":
            out.append(s[i + 1 : i + 2] if s[i + 1 : i + 2] != "\n" else "")
            i += 2
        elif c == "'":
            end = s.find("'", i + 1)
            end = n if end < 0 else end
            out.append(s[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n and s[i + 1] in '"\\$`\n':
                    i += 1
                out.append(s[i])
                i += 1
            i += 1
        elif s.startswith("$(", i) or c == "`":
            end = _skip_substitution(s, i)
            out.append(s[i:end])
            i = end
        else:
            out.append(c)
            i += 1
    return Word("".join(out), start, min(i, n)), min(i, n)


def _skip_substitution(s: str, i: int) -> int:
    if s[i] == "`":
        end = s.find("`", i + 1)
        return len(s) if end < 0 else end + 1
    depth, i = 0, i + 1
    while i < len(s):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        elif s[i] in "'\"":
            end = s.find(s[i], i + 1)
            i = len(s) if end < 0 else end
        i += 1
    return len(s)


# -- instructions (BuildKit's line rules) ----------------------------------------------------

_COMMENT = re.compile(r"^[ \t]*#")
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*([a-zA-Z]+)[ \t]*=[ \t]*(\S*)[ \t]*$")


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    start: int  # first line (0-based)
    header_end: int  # after the last line of the (continued) instruction line
    end: int  # after the last line, heredoc bodies included
    bodies: tuple[tuple[int, int], ...]  # (first body line, terminator line) per heredoc


def escape_char(lines: list[str]) -> str:
    for line in lines:  # parser directives: only at the very top
        m = _DIRECTIVE.match(line.rstrip("\r\n"))
        if m is None:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
            return m.group(2)
    return "\\"


def _continues(line: str, escape: str) -> bool:
    return line.rstrip("\r\n").rstrip(" \t").endswith(escape)


def split_instructions(lines: list[str], escape: str) -> list[Instruction]:
    """Instructions of a Dockerfile given as lines (with their line endings).

    Raises:
        DockerfileError: a heredoc without its terminator line.
    """
    out, i, n = [], 0, len(lines)
    while i < n:
        if not lines[i].strip() or _COMMENT.match(lines[i]):
            i += 1
            continue
        start, j = i, i + 1
        continued = _continues(lines[i], escape)
        while continued and j < n:
            # BuildKit drops comment and empty lines inside a continuation and goes on.
            if lines[j].strip() and not _COMMENT.match(lines[j]):
                continued = _continues(lines[j], escape)
            j += 1
        keyword, header_end, bodies = lines[start].split(None, 1)[0].upper(), j, []
        if keyword in ("RUN", "COPY", "ADD"):
            text, _ = logical_text(lines, start, j, escape)
            for name, strip in shell_words(text)[1]:
                first = j
                while (
                    j < n and (lines[j].lstrip("\t") if strip else lines[j]).rstrip("\r\n") != name
                ):
                    j += 1
                if j >= n:
                    raise DockerfileError(f"line {start + 1}: heredoc {name!r} is never closed")
                bodies.append((first, j))
                j += 1
        out.append(Instruction(keyword, start, header_end, j, tuple(bodies)))
        i = j
    return out


def logical_text(lines: list[str], start: int, stop: int, escape: str) -> tuple[str, list[int]]:
    """The instruction line as BuildKit joins it, and each character's offset in the raw
    text of ``lines[start:stop]``."""
    chars: list[str] = []
    where: list[int] = []
    offset = 0
    for k in range(start, stop):
        line = lines[k]
        if k > start and (not line.strip() or _COMMENT.match(line)):
            offset += len(line)
            continue
        body = line.rstrip("\r\n")
        if _continues(line, escape):
            body = body.rstrip(" \t")[:-1]
        chars.extend(body)
        where.extend(range(offset, offset + len(body)))
        offset += len(line)
    where.append(offset)  # the end
    return "".join(chars), where
