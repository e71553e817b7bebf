"""``--rewrite`` over a corpus of real-world Dockerfile shapes, the lexer it stands on, the
``cacheproxy dockerfile`` command, and the engine probe (with a stand-in ``docker``).

Corpus: ``tests/docker/dockerfiles/corpus/NAME.Dockerfile``, with the expected rewrite in
``NAME.Dockerfile.expected`` and the notes in ``NAME.notes``; regenerate with
``CACHEPROXY_UPDATE_GOLDEN=1`` and review the diff.
"""

import argparse
import os
import stat
from pathlib import Path

import pytest

from cacheproxy.cli import dockerfile as dockerfile_cli
from cacheproxy.cli.main import _Parser
from cacheproxy.docker import engine as docker_env
from cacheproxy.docker.rewrite import Options, recognise, rewrite
from cacheproxy.docker.snippets import Reach, make_target
from cacheproxy.docker.syntax import (
    DockerfileError,
    Word,
    escape_char,
    shell_words,
    split_instructions,
)

CORPUS = sorted((Path(__file__).parent / "dockerfiles" / "corpus").glob("*.Dockerfile"))
UPDATE = bool(os.environ.get("CACHEPROXY_UPDATE_GOLDEN"))
TARGET = make_target(Reach.GATEWAY_IP, gateway="172.17.0.1")


def _pieces(text: str) -> list[tuple[str, str]]:
    """(keyword, raw text) of every instruction and of the text between them."""
    lines = text.splitlines(keepends=True)
    out, done = [], 0
    for ins in split_instructions(lines, escape_char(lines)):
        out.append(("", "".join(lines[done : ins.start])))
        out.append((ins.keyword, "".join(lines[ins.start : ins.end])))
        done = ins.end
    return [*out, ("", "".join(lines[done:]))]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_golden(path: Path) -> None:
    result = rewrite(path.read_text(), TARGET)
    notes = "".join(f"{n.line}: {n.message}\n" for n in result.notes)
    expected, expected_notes = path.with_suffix(".Dockerfile.expected"), path.with_suffix(".notes")
    if UPDATE:
        expected.write_text(result.text)
        expected_notes.write_text(notes)
    assert result.text == expected.read_text()
    assert notes == expected_notes.read_text()


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_only_install_steps_change_and_twice_is_once(path: Path) -> None:
    text = path.read_text()
    once = rewrite(text, TARGET).text
    assert rewrite(once, TARGET).text == once
    before, after = _pieces(text), _pieces(once)
    assert [k for k, _ in before] == [k for k, _ in after]  # no instruction gained or lost
    for (keyword, old), (_, new) in zip(before, after, strict=True):
        if keyword != "RUN":
            assert new == old  # byte-identical outside RUN instructions
        elif new != old:
            assert "--mount=type=cache," in new


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_lexer_agrees_with_buildkit(path: Path) -> None:
    dockerfile = pytest.importorskip(
        "dockerfile", reason="BuildKit's parser: pip install dockerfile"
    )
    for text in (path.read_text(), rewrite(path.read_text(), TARGET).text):
        lines = text.splitlines(keepends=True)
        mine = [
            (i.keyword, i.start + 1, i.end) for i in split_instructions(lines, escape_char(lines))
        ]
        theirs = [(c.cmd.upper(), c.start_line, c.end_line) for c in dockerfile.parse_string(text)]
        assert mine == theirs


def test_crlf_is_kept() -> None:
    text = (CORPUS[0].parent / "continuations.Dockerfile").read_text()
    crlf = text.replace("\n", "\r\n")
    out = rewrite(crlf, TARGET).text
    assert out == rewrite(text, TARGET).text.replace("\n", "\r\n")


def test_removed_last_word_does_not_swallow_the_next_instruction() -> None:
    text = "FROM x\nRUN pip install a \\\n    --no-cache-dir\nRUN echo next\n"
    out = rewrite(text, TARGET).text
    assert out.endswith("pip install a\nRUN echo next\n")
    lines = out.splitlines(keepends=True)
    assert [i.keyword for i in split_instructions(lines, "\\")] == ["FROM", "RUN", "RUN"]


def test_user_given_uid_owns_the_mount() -> None:
    text = "FROM x\nUSER app\nRUN pip install a\n"
    out = rewrite(text, TARGET, Options(uid=1001, home="/srv/app")).text
    assert "uid=1001,gid=1001" in out
    assert "PIP_CACHE_DIR=/srv/app/.cache/pip " in out


def test_own_index_variable_is_kept() -> None:
    text = "FROM x\nRUN PIP_INDEX_URL=https://mirror.example/simple/ pip install a\n"
    result = rewrite(text, TARGET)
    assert "\n    PIP_INDEX_URL=https://mirror.example/simple/ pip install a\n" in result.text
    assert "pypi-cache" not in result.text  # neither the index nor its trusted host
    assert "--mount=type=cache,id=cacheproxy-pip," in result.text
    assert [n.message for n in result.notes] == [
        "keeps the build's own index (PIP_INDEX_URL set on the command): proxy index not added"
    ]


@pytest.mark.parametrize(
    ("lines", "variable"),
    [
        ("ENV PIP_INDEX_URL=https://private.example/simple/", "PIP_INDEX_URL"),
        ("ENV PIP_INDEX_URL https://private.example/simple/", "PIP_INDEX_URL"),
        ("ARG PIP_INDEX_URL", "PIP_INDEX_URL"),
        ("ENV UV_INDEX_URL=https://private.example/simple/", "UV_INDEX_URL"),
        ("ENV UV_DEFAULT_INDEX=https://private.example/simple/", "UV_DEFAULT_INDEX"),
    ],
)
def test_the_builds_own_index_is_not_replaced(lines: str, variable: str) -> None:
    # A private index behind the proxy (one upstream) would lose its packages.
    tool = "uv pip" if variable.startswith("UV") else "pip"
    text = f"FROM x\n{lines}\nRUN {tool} install private-pkg\n"
    result = rewrite(text, TARGET)
    assert "pypi-cache" not in result.text
    assert "--mount=type=cache," in result.text  # the cache mount still helps
    notes = [(n.line, n.message) for n in result.notes]
    assert notes[0][0] == 2
    assert notes[0][1].startswith(f"{lines.split()[0]} {variable}")
    assert notes[1] == (
        3,
        f"keeps the build's own index ({variable} from ENV/ARG): proxy index not added",
    )


def test_an_extra_index_is_kept_with_its_trusted_host() -> None:
    text = (
        "FROM x\nENV PIP_EXTRA_INDEX_URL=http://private.example/simple/ "
        "PIP_TRUSTED_HOST=private.example\nRUN pip install a --extra-index-url=http://u:pw@b.example/s\n"
        'RUN ["pip", "install", "b"]\n'
    )
    result = rewrite(text, TARGET)
    # The proxy replaces the default index; the private one and its trust stay.
    assert (
        'PIP_INDEX_URL=http://pypi-cache:8503/simple/ PIP_TRUSTED_HOST="pypi-cache '
        '${PIP_TRUSTED_HOST}" pip install a' in result.text
    )
    assert '"--trusted-host", "pypi-cache", "b"]' in result.text  # exec form: no shell
    messages = [n.message for n in result.notes]
    assert messages[:2] == [
        "ENV PIP_EXTRA_INDEX_URL=http://private.example/simple/: kept: installs ask it "
        "themselves, not through the proxy",
        "ENV PIP_TRUSTED_HOST=private.example: kept (a rewritten pip step adds the proxy's "
        "host to it)",
    ]
    assert (
        "pip asks --extra-index-url http://u:***@b.example/s, PIP_EXTRA_INDEX_URL itself, "
        "not through the proxy" in messages
    )
    assert "pw" not in "".join(messages)
    assert rewrite(result.text, TARGET).text == result.text


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError, match="never closed"):
        rewrite("FROM x\nRUN <<EOF\npip install a\n", TARGET)


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("a && b || c; d | e", [["a"], ["b"], ["c"], ["d"], ["e"]]),
        ("echo 'a && b' \"c;d\" e\\ f", [["echo", "a && b", "c;d", "e f"]]),
        ("x=$(pip install y) z # pip install q", [["x=$(pip install y)", "z"]]),
        (
            "cat <<EOF\npip install a\nEOF\npip install b",
            [["cat", "<<EOF"], ["pip", "install", "b"]],
        ),
        ("pip \\\ninstall a", [["pip", "install", "a"]]),
    ],
)
def test_shell_words(shell: str, expected: list[list[str]]) -> None:
    assert [[w.value for w in cmd] for cmd in shell_words(shell)[0]] == expected


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("pip install a", "pip"),
        ("pip3.12 --disable-pip-version-check install a", "pip"),
        ("/venv/bin/python -I -m pip install a", "pip"),
        ("python3 -mpip install a", "pip"),
        ("A=1 B=2 pip install a", "pip"),
        ("uv pip install a", "uv-pip"),
        ("uv --directory app pip sync r.txt", "uv-pip"),
        ("uv sync --frozen", "uv-sync"),
        ("pip download a", "pip-download"),
        ("pip3 wheel -w /wheels a", "pip-wheel"),
        ("pipx install black", "pipx"),
        ("poetry install --no-root", "poetry"),
        ("/opt/pdm/bin/pdm sync --prod", "pdm"),
        ("pipx list", None),
        ("poetry run pytest", None),
        ("python -c 'import pip'", None),
        ("python script.py -m pip install", None),
        ("sudo pip install a", None),
        ("uv run pip install", None),
    ],
)
def test_recognise(command: str, kind: str | None) -> None:
    words = [Word(w, 0, 0) for w in command.replace("'import pip'", "import-pip").split()]
    hit = recognise(words)
    assert (hit.kind if hit else None) == kind


# -- the command -------------------------------------------------------------------------------


def _args(*argv: str, engine: docker_env.Engine | None = None) -> argparse.Namespace:
    parser = _Parser(prog="cacheproxy")
    dockerfile_cli.add_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(["dockerfile", *argv])
    probed = engine or docker_env.Engine(reachable=False)
    args.probe_engine = lambda: probed
    return args


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, never a traceback
    assert err.startswith("cacheproxy: error: "), err
    return err


def test_cli_prints_the_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    assert dockerfile_cli.run(_args("--tool", "uv", "-r", "reqs/prod.txt")) == 0
    out = capsys.readouterr().out
    assert "COPY reqs/prod.txt ./reqs/prod.txt\n" in out
    assert "uv pip install -r reqs/prod.txt\n" in out
    assert "(not detected: no Docker engine answered" in out  # and the default gateway
    assert "--add-host pypi-cache:172.17.0.1" in out


def test_cli_uses_the_detected_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    engine = docker_env.Engine(
        reachable=True, gateway="172.31.0.1", gateway_source="from the engine"
    )
    assert dockerfile_cli.run(_args("--print-build-flags", engine=engine)) == 0
    assert capsys.readouterr().out == "--add-host pypi-cache:172.31.0.1\n"


def test_cli_docker_desktop_uses_host_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    engine = docker_env.Engine(reachable=True, desktop=True, gateway="172.17.0.1")
    assert dockerfile_cli.run(_args("--print-build-flags", engine=engine)) == 0
    assert capsys.readouterr().out == "--add-host pypi-cache:host-gateway\n"


def test_cli_no_probe_when_not_needed(capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("--reach", "host-network", "--print-build-flags")

    def fail() -> docker_env.Engine:
        raise AssertionError("the engine was asked")

    args.probe_engine = fail
    assert dockerfile_cli.run(args) == 0
    assert capsys.readouterr().out == "--network=host\n"


@pytest.mark.parametrize("reach", [[], ["--reach", "gateway-ip"]])
def test_cli_gateway_ip_implies_its_reach(
    reach: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an IP, the user wants it used, even without --reach: not the engine's, not dropped.
    args = _args("--gateway-ip", "10.20.0.1", "--print-build-flags", *reach)

    def fail() -> docker_env.Engine:
        raise AssertionError("the engine was asked")

    args.probe_engine = fail
    assert dockerfile_cli.run(args) == 0
    assert capsys.readouterr().out == "--add-host pypi-cache:10.20.0.1\n"
    assert dockerfile_cli.run(_args("--gateway-ip", "10.20.0.1", "--tool", "uv")) == 0
    assert "pypi-cache:10.20.0.1" in capsys.readouterr().out


def test_cli_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dockerfile_cli.run(_args("--tool", "pdm", "--out", str(tmp_path / "o"))) == 0
    assert "pdm install" in (tmp_path / "o" / "pdm.Dockerfile").read_text()
    assert (tmp_path / "o" / "build-flags").read_text() == "--add-host pypi-cache:172.17.0.1\n"
    assert capsys.readouterr().out == ""


def test_cli_rewrite_diff_then_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Dockerfile"
    original = "FROM x\nRUN pip install --no-cache-dir -r r.txt\n"
    path.write_text(original)
    path.chmod(0o640)
    assert dockerfile_cli.run(_args("--rewrite", str(path))) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"--- a/{path}\n+++ b/{path}\n")
    assert "+RUN --mount=type=cache,id=cacheproxy-pip," in captured.out
    assert "removed --no-cache-dir" in captured.err
    assert path.read_text() == original  # a diff only, without --write
    assert dockerfile_cli.run(_args("--rewrite", str(path), "--write")) == 0
    assert path.read_text() == rewrite(original, make_target(Reach.GATEWAY_IP)).text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    capsys.readouterr()
    assert dockerfile_cli.run(_args("--rewrite", str(path), "--write")) == 0
    assert "nothing to change" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--write"],
        ["--rewrite", "/nonexistent/Dockerfile"],
        ["--rewrite", "Dockerfile", "--tool", "uv"],
        ["--mode", "rwx"],
        ["--tool", "poetry", "-r", "requirements.txt"],
        ["--proxy-url", "http://h:1", "--reach", "host-network"],
        ["--proxy-url", "http://user:secret@h:1"],
        ["--gateway-ip", "not-an-ip", "--reach", "gateway-ip"],
        ["--gateway-ip", "not-an-ip"],
        ["--gateway-ip", "10.20.0.1", "--reach", "host-network"],
        ["--gateway-ip", "10.20.0.1", "--reach", "host-gateway"],
        ["--port", "70000"],
        ["--host-alias", "bad alias"],
    ],
)
def test_cli_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert dockerfile_cli.run(_args(*argv)) == 2
    _error_line(capsys)


def test_cli_unreadable_dockerfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nRUN <<EOF\npip install a\n")
    assert dockerfile_cli.run(_args("--rewrite", str(tmp_path / "Dockerfile"))) == 2
    assert "never closed" in _error_line(capsys)
    (tmp_path / "Dockerfile").write_bytes(b"FROM x\nRUN pip install \xff\n")
    assert dockerfile_cli.run(_args("--rewrite", str(tmp_path / "Dockerfile"))) == 2
    assert "not UTF-8" in _error_line(capsys)


def test_cli_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _args("--port", "x")
    assert e.value.code == 2
    _error_line(capsys)


# -- the engine probe ---------------------------------------------------------------------------


def _runner(info: str | None, ipam: str | None) -> docker_env.Runner:
    def run(argv: object, timeout: float) -> str | None:
        assert timeout <= docker_env.TIMEOUT
        return info if "info" in str(argv) else ipam

    return run


INFO = (
    '{"ServerVersion": "20.10.24", "OperatingSystem": "Debian GNU/Linux 12", "SecurityOptions": []}'
)


@pytest.mark.parametrize(
    ("ipam", "gateway", "source"),
    [
        ('[{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]', "172.17.0.1", "from the local"),
        ('[{"Subnet": "10.99.0.0/24"}]', "10.99.0.1", "first address"),  # Docker 20.10
        ('[{"Subnet": "fd00::/64"}]', None, ""),
        ("not json", None, ""),
        (None, None, ""),
    ],
)
def test_probe_gateway(ipam: str | None, gateway: str | None, source: str) -> None:
    engine = docker_env.probe_engine(_runner(INFO, ipam))
    assert engine.reachable
    assert engine.version == "20.10.24"
    assert engine.gateway == gateway
    assert source in engine.note
    if gateway is None:
        assert "not detected" in engine.note


@pytest.mark.parametrize("info", [None, "", "{}", '{"ServerErrors": ["down"]}', "garbage"])
def test_probe_no_engine(info: str | None) -> None:
    engine = docker_env.probe_engine(_runner(info, "[]"))
    assert not engine.reachable
    assert engine.gateway is None


def test_probe_desktop_and_rootless() -> None:
    info = (
        '{"ServerVersion": "27.0", "OperatingSystem": "Docker Desktop",'
        ' "SecurityOptions": ["name=seccomp", "name=rootless"]}'
    )
    engine = docker_env.probe_engine(_runner(info, None))
    assert engine.desktop
    assert engine.rootless


def _fake_docker(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(f"#!/bin/sh\n{script}\n")
    (bindir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))


def test_run_docker_never_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_docker(tmp_path, "exec sleep 5", monkeypatch)
    assert docker_env.run_docker(["info"], 0.2) is None


def test_run_docker_missing_or_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker at all
    assert docker_env.run_docker(["info"], 1) is None
    _fake_docker(tmp_path, "echo oops; exit 1", monkeypatch)
    assert docker_env.run_docker(["info"], 1) is None


def test_probe_through_a_docker_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_docker(
        tmp_path,
        'case "$1" in info) echo \'{"ServerVersion": "28.2.2"}\';; '
        'network) echo \'[{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]\';; esac',
        monkeypatch,
    )
    engine = docker_env.probe_engine()
    assert engine.gateway == "172.18.0.1"
    assert engine.version == "28.2.2"
