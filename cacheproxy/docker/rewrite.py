"""Rewrite a Dockerfile so that its pip and uv install steps go through the proxy.

Every ``RUN`` that runs ``pip install`` (``pip3``, ``python -m pip``, a venv's pip),
``uv pip install``/``uv pip sync`` or ``uv sync`` gets the tool's cache mount and, on the
command itself, the proxy settings of ``snippets.py`` as ``VAR=value`` prefixes (or as
options in exec form, which has no shell). Nothing outside those instructions changes by a
byte, and a rewritten file rewrites to itself.

The build's own indexes stay: an index set by ENV, ARG, the command's variables or options
is not replaced with the proxy (the proxy has one upstream, so a private index's packages
would vanish), and each is reported. ``pip download``/``pip wheel``, pipx, poetry and pdm
steps are reported and left alone.

Instructions and shell words come from ``dockerfile_syntax.py`` (BuildKit's line rules),
with offsets, so a rewrite inserts and removes words and leaves every other byte alone. A
pip hidden in ``sh -c '...'``, ``sudo`` or ``$(...)`` is reported, not rewritten.
"""

import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from cacheproxy.docker.snippets import (
    Identity,
    Setting,
    Target,
    cache_mount,
    pip_settings,
    uv_settings,
)
from cacheproxy.docker.syntax import (
    HEREDOC,
    DockerfileError,
    Instruction,
    Word,
    escape_char,
    logical_text,
    shell_words,
    split_instructions,
)
from cacheproxy.urls import redact_url

__all__ = ["DockerfileError", "Note", "Options", "Rewritten", "rewrite"]


@dataclass(frozen=True, slots=True)
class Note:
    line: int  # 1-based
    message: str


@dataclass(frozen=True, slots=True)
class Rewritten:
    text: str
    notes: tuple[Note, ...]
    changed: int  # RUN instructions that changed


Note_ = Callable[[str], None]  # takes a note on the instruction being rewritten


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    uid: int | None = None  # for RUN steps under a non-root USER given by name
    gid: int | None = None
    home: str | None = None
    sharing: str | None = None


# -- recognising install commands -------------------------------------------------------------

_PIP = re.compile(r"pip(\d+(\.\d+)*)?$")
_PYTHON = re.compile(r"python(\d+(\.\d+)*)?$")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_KEYWORDS = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time", "exec"}
_UV_VALUE_OPTIONS = {"--directory", "--project", "--cache-dir", "--config-file", "--python", "-p"}
# Installers the rewrite leaves alone (with a note), and their subcommands that fetch.
_LEFT_ALONE = {
    "pipx": {"install", "inject", "upgrade", "reinstall", "run", "runpip"},
    "poetry": {"install", "sync", "add", "update", "lock"},
    "pdm": {"install", "sync", "add", "update", "lock"},
}
_MENTION = re.compile(r"\b(pip[\d.]*|uv)\b[^;&|]*\b(install|sync)\b")


@dataclass(frozen=True, slots=True)
class Hit:
    # "pip", "uv-pip", "uv-sync"; or left alone with a note: "pip-download", "pip-wheel",
    # "pipx", "poetry", "pdm"
    kind: str
    at: int  # where the command word starts: the VAR=value prefix goes there
    program: str
    assigned: dict[str, str]  # VAR=value words before the command word
    args: list[Word]  # after the subcommand


def _skip_options(args: list[str], value_options: set[str]) -> int:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in value_options else 1
    return i


def recognise(words: list[Word]) -> Hit | None:
    """The pip/uv install that one simple command runs, if it runs one."""
    i, assigned = 0, dict[str, str]()
    while i < len(words) and (
        _ASSIGNMENT.match(words[i].value) or (words[i].value in _KEYWORDS and not assigned)
    ):
        if "=" in words[i].value:
            key, _, assigned[key] = words[i].value.partition("=")
        i += 1
    if i >= len(words):
        return None
    program = words[i].value
    name, rest = posixpath.basename(program), [w.value for w in words[i + 1 :]]
    skip = 0  # words between the program and the pip-level arguments (python's "-m pip")
    if _PYTHON.match(name):
        j = next((n for n, a in enumerate(rest) if a.startswith("-m")), len(rest))
        if j == len(rest) or any(not a.startswith("-") for a in rest[:j]):
            return None
        module, skip = (rest[j + 1 : j + 2], j + 2) if rest[j] == "-m" else ([rest[j][2:]], j + 1)
        if module != ["pip"]:
            return None
        name = "pip"
    tail = rest[skip:]
    if _PIP.match(name):
        k = _skip_options(tail, set())
        sub = tail[k] if k < len(tail) else ""
        kind = {"install": "pip", "download": "pip-download", "wheel": "pip-wheel"}.get(sub)
        end = k + 1
    elif name in _LEFT_ALONE:
        k = _skip_options(tail, set())
        kind, end = (name, k + 1) if tail[k : k + 1] and tail[k] in _LEFT_ALONE[name] else (None, 0)
    elif name == "uv":
        k = _skip_options(tail, _UV_VALUE_OPTIONS)
        pip_cmd = tail[k : k + 2] in (["pip", "install"], ["pip", "sync"])
        kind, end = (
            ("uv-pip", k + 2)
            if pip_cmd
            else ("uv-sync", k + 1)
            if tail[k : k + 1] == ["sync"]
            else (None, 0)
        )
    else:
        return None
    if kind is None:
        return None
    return Hit(kind, words[i].start, program, assigned, words[i + 1 + skip + end :])


def _has(args: list[str], *options: str) -> bool:
    long = tuple(f"{o}=" for o in options if o.startswith("--"))
    return any(a in options or a.startswith(long) for a in args)


# -- what the proxy can do for one command ------------------------------------------------------


@dataclass(slots=True)
class _Stage:
    user: str = ""
    debian: bool = False  # FROM debian/ubuntu: the system python refuses pip (PEP 668)
    venv: bool = False
    env: frozenset[str] = frozenset()
    # Index settings from ENV, and from ARG (its value may come from --build-arg; an ARG is
    # scoped to its stage, ENV goes on to stages built FROM this one): the build's own, kept.
    env_indexes: frozenset[str] = frozenset()
    arg_indexes: frozenset[str] = frozenset()

    @property
    def indexes(self) -> frozenset[str]:
        return self.env_indexes | self.arg_indexes


# The variables that name an index (or trust one), per tool.
_PIP_INDEX, _UV_INDEX = ("PIP_INDEX_URL",), ("UV_INDEX_URL", "UV_DEFAULT_INDEX")
_PIP_EXTRA, _UV_EXTRA = ("PIP_EXTRA_INDEX_URL",), ("UV_EXTRA_INDEX_URL", "UV_INDEX")
INDEX_VARIABLES = frozenset(
    (*_PIP_INDEX, *_UV_INDEX, *_PIP_EXTRA, *_UV_EXTRA, "PIP_TRUSTED_HOST", "PIP_FIND_LINKS")
)


# What does go through the proxy for a locked uv project (the `--tool uv` snippet has it).
_UV_HOW = (
    "only the cache mount was added; to use the proxy, install `uv export --frozen "
    "--no-emit-project --format requirements-txt -o R` with `uv pip install -r R`"
)


def settings_for(
    hit: Hit, target: Target, ident: Identity, stage: _Stage, note: Note_
) -> list[Setting] | None:
    """The settings ``hit`` lacks (None: leave the command alone), with notes on what the
    proxy cannot do for it."""
    env, args = stage.env | set(hit.assigned), [w.value for w in hit.args]
    index: tuple[str, ...] = ()
    if hit.kind in _LEFT_ALONE_NOTES:
        note(_LEFT_ALONE_NOTES[hit.kind].format(**_proxy_prefix(target, ident)))
        return None
    if _has(args, "--no-index"):  # local files only: nothing for the proxy or the cache
        return None
    # What the command sets itself, less what a rewrite set (a rewritten file rewrites to itself).
    own = stage.indexes | {k for k, v in hit.assigned.items() if v != target.index_url}
    if hit.kind == "pip":
        settings, index = pip_settings(target, ident), ("-i", "--index-url")
        extra = [f"--extra-index-url {v}" for v in _values(args, "--extra-index-url")]
        extra += [v for v in _PIP_EXTRA if v in own]
        if extra:
            note(f"pip asks {', '.join(extra)} itself, not through the proxy")
        if "PIP_TRUSTED_HOST" in stage.indexes:
            # Inline PIP_TRUSTED_HOST would replace the stage's: keep both (pip splits an
            # append option's variable on whitespace: pip cli/parser.py, _update_defaults).
            settings = [_merged_trusted_host(s) for s in settings]
        system = "/" not in hit.program or hit.program.startswith(("/usr/bin/", "/bin/"))
        exempt = _has(args, "--break-system-packages", "--target", "-t", "--prefix", "--root")
        if (
            stage.debian
            and not stage.venv
            and system
            and not exempt
            and "PIP_BREAK_SYSTEM_PACKAGES" not in env
        ):
            note("Debian/Ubuntu's python refuses pip installs (PEP 668): use a venv")
    elif hit.kind == "uv-pip":
        settings, index = (
            uv_settings(target, ident),
            ("-i", "--index-url", "--default-index", "--index"),
        )
        extra = [f"--extra-index-url {v}" for v in _values(args, "--extra-index-url")]
        extra += [v for v in _UV_EXTRA if v in own]
        if extra:
            note(f"uv asks {', '.join(extra)} first for what it has, not through the proxy")
    elif _has(args, "--frozen") or "UV_FROZEN" in env:
        settings = uv_settings(None, ident)
        note(f"uv sync --frozen installs from uv.lock's URLs, ignoring indexes: {_UV_HOW}")
    elif _has(args, "--locked") or "UV_LOCKED" in env:
        settings = uv_settings(None, ident)
        note(f"uv sync --locked fails if the index differs from uv.lock's (uv#6349): {_UV_HOW}")
    else:
        settings = uv_settings(target, ident)
        note("uv sync re-locks against the proxy in the build (the image's uv.lock names it)")
    ours = ("PIP_INDEX_URL", "PIP_TRUSTED_HOST", "UV_DEFAULT_INDEX")
    primary = _PIP_INDEX if hit.kind == "pip" else _UV_INDEX
    if index and _has(args, *index):
        note(f"{hit.program} names its own index on the command line: proxy index not added")
        settings = [s for s in settings if s.env not in ours]
    elif any(s.env in ours for s in settings) and (set(primary) & own):
        # A private index would lose its packages behind the proxy (one upstream): the
        # build's own index stays, and this step does not go through the proxy.
        where = sorted(set(primary) & own)
        how = "set on the command" if set(where) <= set(hit.assigned) else "from ENV/ARG"
        note(f"keeps the build's own index ({', '.join(where)} {how}): proxy index not added")
        settings = [s for s in settings if s.env not in ours]
    for s in settings:
        if hit.assigned.get(s.env, s.value) != s.value:
            note(f"keeps its own {s.env}={redact_url(hit.assigned[s.env])}")
    if {"PIP_NO_CACHE_DIR", "UV_NO_CACHE"} & env:
        note("PIP_NO_CACHE_DIR/UV_NO_CACHE is set (ENV): it defeats the cache mount")
    return [s for s in settings if s.env not in hit.assigned]


_LEFT_ALONE_NOTES = {
    "pip-download": "pip download is left alone: it fetches from its own index, not the "
    "proxy; to use the proxy, prefix it with {pip}",
    "pip-wheel": "pip wheel is left alone: it fetches from its own index, not the proxy; "
    "to use the proxy, prefix it with {pip}",
    "pipx": "pipx is left alone: its pip fetches from its own index, not the proxy; to use "
    "the proxy, prefix it with {pip}",
    "poetry": "poetry is left alone: it installs from pyproject.toml's sources, not the proxy "
    "(python-poetry/poetry#1632); `cacheproxy dockerfile --tool poetry` prints an export + "
    "pip install step that goes through it",
    "pdm": "pdm is left alone: it installs from its own sources, not the proxy; "
    "`cacheproxy dockerfile --tool pdm` prints a step that goes through it",
}


def _proxy_prefix(target: Target, ident: Identity) -> dict[str, str]:
    return {"pip": " ".join(s.assignment() for s in pip_settings(target, ident))}


def _merged_trusted_host(s: Setting) -> Setting:
    if s.env != "PIP_TRUSTED_HOST":
        return s
    return Setting(s.env, s.flag, f"{s.value} ${{PIP_TRUSTED_HOST}}", expand=True)


def _values(args: list[str], option: str) -> list[str]:
    """The values given to ``option`` (``--opt v`` or ``--opt=v``), credentials redacted."""
    out = []
    for n, a in enumerate(args):
        if a == option and n + 1 < len(args):
            out.append(redact_url(args[n + 1]))
        elif a.startswith(f"{option}="):
            out.append(redact_url(a.partition("=")[2]))
    return out


def stage_notes(keyword: str, assigned: dict[str, str]) -> list[str]:
    """Notes on an ENV or ARG instruction that sets an index, for every one it sets."""
    notes = []
    for name, value in assigned.items():
        if name not in INDEX_VARIABLES:
            continue
        shown = f"{name}={redact_url(value)}" if value else name
        given = " (when --build-arg gives it)" if keyword == "ARG" and not value else ""
        if name in (*_PIP_INDEX, *_UV_INDEX):
            tool = "uv" if name.startswith("UV") else "pip"
            what = f"the build's own index{given}: kept, so {tool} installs here skip the proxy"
        elif name in (*_PIP_EXTRA, *_UV_EXTRA, "PIP_FIND_LINKS"):
            what = "kept: installs ask it themselves, not through the proxy"
        else:
            what = "kept (a rewritten pip step adds the proxy's host to it)"
        notes.append(f"{keyword} {shown}: {what}")
    return notes


# These defeat the cache mount (pip and uv then neither read nor write it); the mount keeps
# the cache out of the image anyway, which is why they were there. So they are removed,
# with a note.
_NO_CACHE = {"pip": ("--no-cache-dir",), "uv": ("--no-cache", "-n")}


# -- the rewrite ------------------------------------------------------------------------------

_MAKES_VENV = re.compile(r"-m\s+venv\b|\bvirtualenv\s|\buv\s+venv\b")
_DEBIAN = re.compile(r"^(docker\.io/)?(library/)?(debian|ubuntu)([:@]|$)", re.I)
Edit = tuple[int, int, str]  # raw offsets in the instruction's text, replacement


def rewrite(text: str, target: Target, options: Options = Options()) -> Rewritten:
    """``text`` with its pip/uv steps going through ``target``, and notes for the user.

    Raises:
        DockerfileError: the text cannot be split into instructions.
    """
    lines = text.splitlines(keepends=True)
    escape = escape_char(lines)
    out: list[str] = []
    notes: list[Note] = []
    stages: dict[str, _Stage] = {}
    stage, done, changed = _Stage(), 0, 0
    for ins in split_instructions(lines, escape):
        out.extend(lines[done : ins.start])
        done = ins.end
        raw = "".join(lines[ins.start : ins.end])
        logical, _ = logical_text(lines, ins.start, ins.header_end, escape)
        words = logical.split()
        if ins.keyword == "FROM":  # a stage built FROM another one inherits what it knows
            image = next((w for w in words[1:] if not w.startswith("--")), "").lower()
            parent = stages.get(image)
            stage = (
                replace(parent, arg_indexes=frozenset())
                if parent
                else _Stage(debian=bool(_DEBIAN.match(image)))
            )
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages[words[-1].lower()] = stage
        elif ins.keyword == "USER" and len(words) > 1:
            stage.user = words[1]
        elif ins.keyword in ("ENV", "ARG"):
            assigned = _assignments(ins.keyword, logical)
            if ins.keyword == "ENV":
                stage.env |= set(assigned)
                stage.venv |= "VIRTUAL_ENV" in logical or "/venv" in logical
                stage.env_indexes |= set(assigned) & INDEX_VARIABLES
            else:
                stage.arg_indexes |= set(assigned) & INDEX_VARIABLES
            for message in stage_notes(ins.keyword, assigned):
                notes.append(Note(ins.start + 1, message))
        elif ins.keyword == "RUN":

            def note(message: str, line: int = ins.start + 1) -> None:
                notes.append(Note(line, message))

            new = rewrite_run(lines, ins, escape, target, options, stage, note)
            if new != raw:
                raw, changed = new, changed + 1
            stage.venv |= bool(_MAKES_VENV.search(logical))
        elif ins.keyword == "ONBUILD" and _MENTION.search(logical):
            note_at = ins.start + 1
            notes.append(Note(note_at, "ONBUILD runs in images built FROM this one: not rewritten"))
        out.append(raw)
    out.extend(lines[done:])
    return Rewritten("".join(out), tuple(notes), changed)


def _assignments(keyword: str, logical: str) -> dict[str, str]:
    """NAME -> value of an ENV (``A=1 B=2``, or legacy ``NAME value``) or ARG (``NAME``,
    ``NAME=default``) instruction; an ARG without a default has the value ""."""
    (words, *_), _ = shell_words(logical)
    words = words[1:]
    if keyword == "ENV" and words and "=" not in words[0].value:
        return {words[0].value: " ".join(w.value for w in words[1:])}
    return {
        name: value
        for name, _, value in (w.value.partition("=") for w in words)
        if re.fullmatch(r"[A-Za-z_]\w*", name)
    }


def identity(user: str, options: Options, note: Note_) -> Identity:
    """Who a RUN step under ``USER user`` is, for its cache mount."""
    name, _, group = user.partition(":")
    if name in ("", "root", "0"):
        return Identity()
    uid = int(name) if name.isdigit() else options.uid
    gid = int(group) if group.isdigit() else options.gid
    plain = re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None
    home = options.home or (f"/home/{name}" if plain and not name.isdigit() else None)
    if uid is not None:
        return Identity(uid=uid, gid=gid, home=home)
    # BuildKit creates a cache mount root-owned 0755 unless told otherwise; the tool could
    # not write it as USER <name> and would silently cache nothing. 0777 works for any uid.
    note(f"runs as USER {name}: cache mount made mode=0777 (pass --uid/--gid to own it instead)")
    return Identity(name=name if plain else "user", home=home, mode="0777")


def rewrite_run(
    lines: list[str],
    ins: Instruction,
    escape: str,
    target: Target,
    options: Options,
    stage: _Stage,
    note: Note_,
) -> str:
    """The text of one RUN instruction (heredoc bodies included), rewritten."""
    raw = "".join(lines[ins.start : ins.end])
    text, where = logical_text(lines, ins.start, ins.header_end, escape)
    commands, _ = shell_words(text)
    first = commands[0] if commands else []
    k = 1  # after RUN and its --flags
    while k < len(first) and first[k].value.startswith("--"):
        k += 1
    if k >= len(first):
        return raw
    ident = identity(stage.user, options, note) if _MENTION.search(raw) else Identity()
    edits: list[Edit] = []
    kinds: set[str] = set()
    rest = text[first[k].start :].rstrip()
    exec_form = rest.startswith("[")
    if exec_form:  # exec form: no shell for VAR=value, so options instead
        try:
            argv = json.loads(rest)
        except ValueError:
            argv = None
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            edit = _exec_edit(argv, target, ident, stage, note, kinds)
            if edit is not None:
                edits.append(
                    (where[first[k].start], where[first[k].start + len(rest) - 1] + 1, edit)
                )
    elif ins.bodies and _is_script(first[k:]):  # RUN <<EOF: the heredoc is the script
        b, t = ins.bodies[0]
        body, base = "".join(lines[b:t]), len("".join(lines[ins.start : b]))
        if not body.startswith("#!") or re.match(r"#!\S*/(env +)?(ba|da)?sh\b", body):
            for cmd in shell_words(body)[0]:
                edits += _shell_edits(
                    cmd, [base + p for p in range(len(body) + 1)], target, ident, stage, note, kinds
                )
    else:
        for n, cmd in enumerate(commands):
            edits += _shell_edits(
                cmd[k:] if n == 0 else cmd, where, target, ident, stage, note, kinds
            )
    if not kinds and _MENTION.search(text):
        note("mentions pip/uv install in a form not rewritten (sh -c, sudo, $(...)): left as is")
    have = _cache_targets([w.value for w in first[1:k]])
    mounts = [
        cache_mount(kd, ident, options.sharing)
        for kd in sorted(kinds - {"-"})
        if ident.cache_dir(kd) not in have
    ]
    if mounts:
        head = lines[ins.start]
        at = len(head) - len(head.lstrip(" \t"))
        at += len(ins.keyword)
        at += len(head[at:]) - len(head[at:].lstrip(" \t"))
        flags = " ".join(f"--mount={m}" for m in mounts)
        newline = "\r\n" if head.endswith("\r\n") else "\n"
        # A line of its own, continued, keeps the command readable; heredoc and exec-form
        # headers stay on one line.
        own_line = not ins.bodies and not exec_form and head[at:].strip() not in ("", escape)
        edits.append((at, at, f"{flags} {escape}{newline}    " if own_line else f"{flags} "))
    # Right to left, so earlier offsets stay valid; at one offset the mount goes in last, so
    # it ends up first.
    for start, end, new in sorted(
        edits, key=lambda e: (e[0], e[1] > e[0], not e[2].startswith("--mount")), reverse=True
    ):
        if not new and end > start:
            start, end = _cut(raw, start, end, escape)
        raw = raw[:start] + new + raw[end:]
    return raw


def _is_script(words: list[Word]) -> bool:
    names = [w.value for w in words if not w.value.startswith("-")]
    shells: list[list[str]] = [[], ["sh"], ["bash"], ["/bin/sh"], ["/bin/bash"]]
    return bool(names) and HEREDOC.match(names[-1]) is not None and names[:-1] in shells


def _cache_targets(flags: list[str]) -> set[str]:
    """Targets of the cache mounts a RUN already has (BuildKit's default type is bind)."""
    targets = set()
    for flag in flags:
        if flag.startswith("--mount="):
            fields = dict(f.partition("=")[::2] for f in flag.removeprefix("--mount=").split(","))
            path = fields.get("target") or fields.get("dst") or fields.get("destination") or ""
            if fields.get("type") == "cache":
                targets.add(path.rstrip("/") or "/")
    return targets


def _shell_edits(
    words: list[Word],
    where: list[int],
    target: Target,
    ident: Identity,
    stage: _Stage,
    note: Note_,
    kinds: set[str],
) -> list[Edit]:
    hit = recognise(words)
    settings = None if hit is None else settings_for(hit, target, ident, stage, note)
    if hit is None or settings is None:
        kinds.update(["-"] if hit else [])  # seen, and deliberately left alone
        return []
    kind = hit.kind.split("-")[0]
    kinds.add(kind)
    edits = [(where[hit.at], where[hit.at], " ".join(s.assignment() for s in settings) + " ")]
    for word in hit.args:
        if word.value in _NO_CACHE[kind]:
            note(f"removed {word.value}: it defeats the cache mount")
            edits.append((where[word.start], where[word.end - 1] + 1, ""))
    return edits if settings else edits[1:]


def _exec_edit(
    argv: list[str], target: Target, ident: Identity, stage: _Stage, note: Note_, kinds: set[str]
) -> str | None:
    hit = recognise([Word(a, n, n + 1) for n, a in enumerate(argv)])
    settings = None if hit is None else settings_for(hit, target, ident, stage, note)
    if hit is None or settings is None:
        kinds.update(["-"] if hit else [])
        return None
    kind = hit.kind.split("-")[0]
    kinds.add(kind)
    cut = len(argv) - len(hit.args)
    extra = [x for s in settings if not _has(argv, s.flag) for x in (s.flag, s.literal())]
    kept = [a for a in argv[cut:] if a not in _NO_CACHE[kind]]
    if len(kept) < len(argv) - cut:
        note("removed the no-cache option: it defeats the cache mount")
    new = argv[:cut] + extra + kept
    return json.dumps(new) if new != argv else None


def _cut(raw: str, start: int, end: int, escape: str) -> tuple[int, int]:
    """What to cut for a removed word: the blanks before it too, and its whole line when
    nothing else is left on it (an empty continuation line could swallow the next
    instruction)."""
    while start > 0 and raw[start - 1] in " \t":
        start -= 1
    line_start = raw.rfind("\n", 0, start) + 1
    line_end = raw.find("\n", end)
    line_end = len(raw) if line_end < 0 else line_end
    left, right = raw[line_start:start], raw[end:line_end].strip()
    if line_start == 0 or left.strip() or right not in ("", escape):
        return start, end
    if right == escape:  # a continued line: drop it whole
        return line_start, line_end + 1
    prev = raw.rfind(escape, 0, line_start)  # the last line: drop it and the escape before it
    while prev > 0 and raw[prev - 1] in " \t":
        prev -= 1
    return prev, line_end - raw[:line_end].endswith("\r")  # keep this line's own ending
