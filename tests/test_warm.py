"""``cacheproxy warm``: inputs parsed, files chosen per target, fetched through the proxy.

Warming is proven by the fake upstream's request log (a second warm, or an install through
an offline proxy on the same cache, asks upstream for nothing) and by the files in the
cache directory, named by their sha256.
"""

import asyncio
import io
import re
import shutil
import socket
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import client_env, make_settings, uv_binary
from distbuild import build_sdist, build_wheel
from fakeindex import FakeFile, FakeIndex
from packaging.utils import canonicalize_name
from pytest_aiohttp import AiohttpServer
from rich.console import Console
from test_clients import run
from yarl import URL

from cacheproxy.cli.warm import (
    PlainReporter,
    RichReporter,
    main,
    make_reporter,
    proxy_index_url,
)
from cacheproxy.errors import ConfigError
from cacheproxy.units import format_bytes
from cacheproxy.warm.engine import Options, warm
from cacheproxy.warm.fetch import Job, fetch_file, make_session
from cacheproxy.warm.lockfiles import (
    Artifact,
    Kind,
    LockFileError,
    LockInput,
    Note,
    Package,
    Unresolved,
    detect_kind,
    load,
    marker_applies,
    parse_pdm_lock,
    parse_requirements,
)
from cacheproxy.warm.plan import add_job, choose
from cacheproxy.warm.report import (
    Outcome,
    Result,
    Summary,
    result_line,
    summary_line,
)
from cacheproxy.warm.resolve import resolve
from cacheproxy.warm.targets import make_targets, parse_platform, parse_python_version
from cacheproxy.web.app import create_app

FIXTURES = Path(__file__).parent / "lockfiles"


# -- helpers -------------------------------------------------------------------------------


class Recorder(PlainReporter):
    """Plain lines, kept for the assertions."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        super().__init__(self.buffer)

    @property
    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()


async def run_warm(
    index_url: str,
    paths: Sequence[Path],
    *,
    platforms: Sequence[str] = (),
    pythons: Sequence[str] = (),
    reporter: Any = None,
    **options: Any,
) -> tuple[Summary, list[str]]:
    reporter = reporter or Recorder()
    url = URL(index_url)
    targets = make_targets(platforms, pythons)
    async with make_session(url, 8) as session:
        summary = await warm(
            [load(p) for p in paths], Options(url, targets, **options), reporter, session
        )
    return summary, reporter.lines if isinstance(reporter, Recorder) else []


def blob(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / "files" / "sha256" / sha256[:2] / sha256


def by_outcome(summary: Summary, outcome: Outcome) -> set[str]:
    return {r.name for r in summary.results if r.outcome is outcome}


def wheel_of(fake: FakeIndex, project: str) -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(".whl"))


def uv_lock_text(fake: FakeIndex, files: Sequence[FakeFile], **override: Any) -> str:
    """A uv.lock (uv's own layout) with one registry package per file's project."""
    projects: dict[str, list[FakeFile]] = {}
    for f in files:
        projects.setdefault(f.project, []).append(f)
    out = ['version = 1\nrevision = 3\nrequires-python = ">=3.8"\n']
    for name, pfiles in projects.items():
        out.append(f'\n[[package]]\nname = "{name}"\nversion = "{pfiles[0].version}"\n')
        out.append(f'source = {{ registry = "{fake.index_url}" }}\nwheels = [\n')
        for f in pfiles:
            o = override.get(f.filename, {})
            sha, size = o.get("sha256", f.sha256), o.get("size", f.size)
            url = o.get("url", fake.file_url(f))
            out.append(f'    {{ url = "{url}", hash = "sha256:{sha}", size = {size} }},\n')
        out.append("]\n")
    return "".join(out)


def poetry_lock_text(fake: FakeIndex, projects: Sequence[str]) -> str:
    """A Poetry 2 lock: filenames and hashes only, no URLs."""
    out = []
    for name in projects:
        files = [f for f in fake.files(name) if f.version == fake.files(name)[0].version]
        entries = "".join(
            f'    {{file = "{f.filename}", hash = "sha256:{f.sha256}"}},\n' for f in files
        )
        out.append(
            f'[[package]]\nname = "{name}"\nversion = "{files[0].version}"\n'
            f'description = ""\noptional = false\npython-versions = "*"\n'
            f'groups = ["main"]\nfiles = [\n{entries}]\n\n'
        )
    out.append('[metadata]\nlock-version = "2.1"\npython-versions = "^3.8"\ncontent-hash = "0"\n')
    return "".join(out)


def pdm_lock_text(fake: FakeIndex, projects: Sequence[str]) -> str:
    """A pdm.lock (lock_version 4.5, inherit_metadata): filenames and hashes, no URLs."""
    out = [
        "# This file is @generated by PDM.\n# It is not intended for manual editing.\n\n"
        '[metadata]\ngroups = ["default"]\nstrategy = ["inherit_metadata"]\n'
        f'lock_version = "4.5.0"\ncontent_hash = "sha256:{"0" * 64}"\n\n'
        '[[metadata.targets]]\nrequires_python = ">=3.8"\n'
    ]
    for name in projects:
        files = [f for f in fake.files(name) if f.version == fake.files(name)[0].version]
        entries = "".join(
            f'    {{file = "{f.filename}", hash = "sha256:{f.sha256}"}},\n' for f in files
        )
        out.append(
            f'\n[[package]]\nname = "{name}"\nversion = "{files[0].version}"\n'
            f'requires_python = ">=3.8"\nsummary = ""\ngroups = ["default"]\n'
            f"files = [\n{entries}]\n"
        )
    return "".join(out)


run_tool = run  # one way to run a client, shared with test_clients


async def warm_cli(tmp: Path, *args: str) -> tuple[int, str, str]:
    """``cacheproxy warm`` as a user runs it: another process, stdout not a terminal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy.cli.warm", "warm", *args,
        env=client_env(tmp), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- targets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "python", "wheel", "fits"),
    [
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-manylinux_2_17_x86_64.whl", True),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-manylinux2014_x86_64.whl", True),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-manylinux_2_5_x86_64.whl", True),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-manylinux_2_28_x86_64.whl", False),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp312-cp312-manylinux_2_17_x86_64.whl", False),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-manylinux_2_17_aarch64.whl", False),
        ("manylinux_2_17_x86_64", "3.11", "x-1-cp311-cp311-musllinux_1_2_x86_64.whl", False),
        ("manylinux_2_17_x86_64", "3.12", "x-1-cp38-abi3-manylinux_2_17_x86_64.whl", True),
        ("manylinux2014_aarch64", "3.12", "x-1-cp312-cp312-manylinux_2_17_aarch64.whl", True),
        ("musllinux_1_2_x86_64", "3.12", "x-1-cp312-cp312-musllinux_1_1_x86_64.whl", True),
        ("win_amd64", "3.12", "x-1-cp312-cp312-win_amd64.whl", True),
        ("win_amd64", "3.12", "x-1-cp312-cp312-win32.whl", False),
        ("win_amd64", "3.12", "x-1-py3-none-any.whl", True),
        ("win_amd64", "3.12", "x-1-py2.py3-none-any.whl", True),
        ("macosx_11_0_arm64", "3.11", "x-1-cp311-cp311-macosx_10_9_universal2.whl", True),
        ("macosx_11_0_arm64", "3.11", "x-1-cp311-cp311-macosx_10_9_x86_64.whl", False),
        ("macosx_11_0_arm64", "3.11", "x-1-cp311-cp311-macosx_14_0_arm64.whl", False),
        ("macosx_14_0_arm64", "3.11", "x-1-cp311-cp311-macosx_11_0_arm64.whl", True),
    ],
)
def test_target_tags(platform: str, python: str, wheel: str, fits: bool) -> None:
    [target] = make_targets([platform], [python])
    assert (target.rank(wheel) is not None) is fits


def test_targets_are_the_product_and_carry_markers() -> None:
    targets = make_targets(["manylinux_2_28_x86_64", "win_amd64"], ["3.11", "3.12.4"])
    assert [t.label for t in targets] == [
        "cp311-manylinux_2_28_x86_64",
        "cp311-win_amd64",
        "cp312-manylinux_2_28_x86_64",
        "cp312-win_amd64",
    ]
    linux, win = targets[0], targets[3]
    assert linux.env["sys_platform"] == "linux"
    assert linux.env["python_full_version"] == "3.11.0"
    assert win.env["platform_system"] == "Windows"
    assert win.env["python_full_version"] == "3.12.4"
    assert not marker_applies("sys_platform == 'win32'", linux.env)
    assert marker_applies("sys_platform == 'win32' and python_version >= '3.12'", win.env)
    # pip resolves for the target with every platform tag warm chooses files by.
    assert win.pip_args == (
        "--python-version", "3.12.4", "--implementation", "cp", "--platform", "win_amd64"
    )  # fmt: skip
    linux_platforms = linux.pip_args[5::2]
    assert linux.pip_args[4::2] == ("--platform",) * len(linux_platforms)
    assert linux_platforms[0] == "manylinux_2_28_x86_64"
    assert "manylinux2014_x86_64" in linux_platforms
    mac = parse_platform("macosx_12_0_arm64")
    assert mac.platforms[0] == "macosx_12_0_arm64"
    assert "macosx_11_0_universal2" in mac.platforms
    assert mac.env["platform_machine"] == "arm64"
    # No targets: this machine, with its own tags and markers.
    [here] = make_targets([], [])
    assert here.label == "this machine"
    assert here.rank("x-1-py3-none-any.whl") is not None


def test_best_wheel_then_sdist() -> None:
    def art(filename: str) -> Artifact:
        return Artifact(filename, None, {})

    pkg = Package(canonicalize_name("x"), None, None, None, "test")
    files = [
        art("x-1-cp312-cp312-manylinux_2_17_x86_64.whl"),
        art("x-1-cp312-cp312-manylinux_2_28_x86_64.whl"),
        art("x-1-py3-none-any.whl"),
        art("x-1.tar.gz"),
    ]
    [new] = make_targets(["manylinux_2_28_x86_64"], ["3.12"])
    [old] = make_targets(["manylinux_2_17_x86_64"], ["3.12"])
    [win] = make_targets(["win_amd64"], ["3.12"])
    # The installer's pick: the most specific tag the machine accepts, one wheel only.
    assert [a.filename for a in choose(pkg, new, files, False)] == [files[1].filename]
    assert [a.filename for a in choose(pkg, old, files, False)] == [files[0].filename]
    assert [a.filename for a in choose(pkg, win, files, False)] == ["x-1-py3-none-any.whl"]
    assert [a.filename for a in choose(pkg, win, files, True)] == [
        "x-1-py3-none-any.whl",
        "x-1.tar.gz",
    ]
    assert [a.filename for a in choose(pkg, win, files[:2] + files[3:], False)] == ["x-1.tar.gz"]
    assert choose(pkg, win, files[:2], False) == []


@pytest.mark.parametrize(
    ("platforms", "pythons", "message"),
    [
        (["any"], [], "not a wheel platform tag"),
        (["macosx_11_0_ppc"], [], "macOS arch"),
        ([], ["2.7"], "--python-version"),
        ([], ["3.x"], "--python-version"),
    ],
)
def test_bad_targets(platforms: list[str], pythons: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_targets(platforms, pythons)
    assert parse_python_version("3.13") == (3, 13, 0)


# -- parsing -------------------------------------------------------------------------------


def names_for(lock: LockInput | Unresolved, platform: str, python: str) -> set[str]:
    assert isinstance(lock, LockInput)
    [target] = make_targets([platform], [python])
    return {p.label for p in lock.select(target.env)[0]}


def test_uv_lock_is_walked_per_target() -> None:
    lock = load(FIXTURES / "uv.lock")
    assert isinstance(lock, LockInput)
    assert lock.kind is Kind.UV_LOCK
    common = {"certifi 2024.8.30", "requests 2.32.3", "pysocks 1.7.1", "orjson 3.10.7"}
    common |= {"pytest-tiny 1.0"}  # the project's own extras and dev groups are all warmed
    assert names_for(lock, "manylinux_2_17_x86_64", "3.11") == {
        *common, "numpy 1.26.4", "toolz 1.0.0"
    }  # fmt: skip
    # A fork by Python version; colorama and toolz only where their markers hold.
    assert names_for(lock, "win_amd64", "3.12") == {*common, "numpy 2.1.0", "colorama 0.4.6"}
    # requests' "security" extra is never asked for, so "unwanted" is never reached.
    assert all("unwanted" not in names_for(lock, p, "3.12") for p in ("win_amd64", "linux_x86_64"))
    [target] = make_targets(["win_amd64"], ["3.12"])
    packages, skipped = lock.select(target.env)
    assert {n.name: n.reason.split(" (")[0] for n in skipped} == {
        "demo 0.1.0": "editable source",
        "demo-lib 0.1.0": "local directory source",
        "vendored 0.3.0": "git source",
    }
    requests = next(p for p in packages if p.name == "requests")
    [wheel] = requests.artifacts or ()
    assert wheel.filename == "requests-2.32.3-py3-none-any.whl"
    assert wheel.size == 1000
    assert wheel.url is not None
    assert URL(wheel.url).path.startswith("/packages/")
    assert set(wheel.hashes) == {"sha256"}
    assert len(wheel.hashes["sha256"]) == 64
    assert lock.requires_python is not None
    assert "3.9" not in lock.requires_python


def test_poetry_locks() -> None:
    lock = load(FIXTURES / "poetry.lock")
    assert isinstance(lock, LockInput)
    assert lock.kind is Kind.POETRY_LOCK
    assert names_for(lock, "manylinux_2_17_x86_64", "3.11") == {"certifi 2024.8.30"}
    # Markers per group: needed when any group's marker holds.
    assert names_for(lock, "win_amd64", "3.11") == {
        "certifi 2024.8.30", "colorama 0.4.6", "pywin32 306"
    }  # fmt: skip
    assert [n.name for n in lock.skipped] == ["tools 0.1.0"]
    # Lock-version 1.1, sniffed by content: files in [metadata.files], no markers at all.
    legacy = load(FIXTURES / "legacy-poetry.lock")
    assert isinstance(legacy, LockInput)
    assert legacy.kind is Kind.POETRY_LOCK
    packages, _ = legacy.select(make_targets(["manylinux_2_17_x86_64"], ["3.11"])[0].env)
    assert {p.label: p.markers_known for p in packages} == {
        "certifi 2024.8.30": False,
        "pywin32 306": False,
    }
    assert all(p.artifacts and p.artifacts[0].url is None for p in packages)


def test_pdm_lock() -> None:
    """pdm.lock as PDM 2 writes it (lock_version 4.5, inherit_metadata): markers per package,
    an entry more per extras set, local sources skipped."""
    lock = load(FIXTURES / "pdm.lock")
    assert isinstance(lock, LockInput)
    assert lock.kind is Kind.PDM_LOCK
    linux = {"certifi 2024.8.30", "pysocks 1.7.1", "requests 2.32.3"}
    assert names_for(lock, "manylinux_2_17_x86_64", "3.11") == linux
    assert names_for(lock, "win_amd64", "3.11") == {*linux, "colorama 0.4.6", "pywin32 306"}
    assert {n.name: n.reason for n in lock.skipped} == {
        "demo-lib 0.1.0": "editable, local path source (./libs/demo-lib), not on an index",
        "tools 0.1.0": "git source (https://git.example.invalid/tools.git), not on an index",
    }
    packages, _ = lock.select(make_targets(["win_amd64"], ["3.11"])[0].env)
    requests = next(p for p in packages if p.name == "requests")
    assert requests.markers_known
    [wheel] = requests.artifacts or ()
    assert (wheel.filename, wheel.url) == ("requests-2.32.3-py3-none-any.whl", None)
    assert wheel.hashes["sha256"].startswith("bd0c80dd")
    assert lock.requires_python is not None
    assert "3.10" not in lock.requires_python
    # Sniffed by content under another name; the static_urls strategy writes URLs.
    text = (FIXTURES / "pdm.lock").read_text()
    other = Path("deps.lock")
    doc_kind = detect_kind(other, text)
    assert doc_kind is Kind.PDM_LOCK
    static = re.sub(r"(?m)^marker = .*\n", "", text)  # without inherit_metadata: none
    static = static.replace(
        '{file = "PySocks-1.7.1-py3-none-any.whl",',
        '{url = "https://files.example.invalid/packages/0f/57/PySocks-1.7.1-py3-none-any.whl",',
    ).replace('strategy = ["inherit_metadata"]', 'strategy = ["static_urls"]')
    unmarked = parse_pdm_lock(other, tomllib.loads(static))
    by_name = {str(p.name): p for p in unmarked.select({})[0]}
    assert not by_name["pysocks"].markers_known  # no inherit_metadata: markers unknown
    [socks] = by_name["pysocks"].artifacts or ()
    assert socks.filename == "PySocks-1.7.1-py3-none-any.whl"
    assert socks.url is not None
    assert "pywin32" in by_name  # without markers every package is a candidate


def test_pylock() -> None:
    lock = load(FIXTURES / "pylock.toml")
    assert isinstance(lock, LockInput)
    assert lock.kind is Kind.PYLOCK
    assert names_for(lock, "manylinux_2_17_x86_64", "3.11") == {"certifi 2024.8.30"}
    assert names_for(lock, "win_amd64", "3.11") == {"certifi 2024.8.30", "colorama 0.4.6"}
    assert {n.name for n in lock.skipped} == {"localwheel 1.0", "tools 0.1.0", "demo"}


def test_requirements_files() -> None:
    hashed = load(FIXTURES / "requirements-hashed.txt")
    assert isinstance(hashed, LockInput)
    win = make_targets(["win_amd64"], ["3.11"])[0]
    packages = {p.label: p for p in hashed.select(win.env)[0]}
    # The -r file counts, the marker holds on Windows only, extras do not matter.
    assert set(packages) == {"certifi 2024.8.30", "colorama 0.4.6", "requests 2.32.3"}
    assert packages["certifi 2024.8.30"].origin == "requirements-base.txt:2"
    assert len(packages["certifi 2024.8.30"].allowed or ()) == 2
    assert names_for(hashed, "manylinux_2_17_x86_64", "3.11") == {
        "certifi 2024.8.30", "requests 2.32.3"
    }  # fmt: skip
    # Hash-checking mode as pip has it: unpinned or unhashed lines fail, local ones skip.
    assert {n.name: n.reason for n in hashed.failed} == {
        "idna>=3": "not pinned with == (requirements-hashed.txt:9)",
        "urllib3==2.2.3": "no --hash in a hash-checking file (requirements-hashed.txt:10)",
    }
    assert {n.name for n in hashed.skipped} == {
        "./local-project",
        "./vendor/tool-1.0-py3-none-any.whl",
    }
    plain = load(FIXTURES / "requirements.in")
    assert isinstance(plain, Unresolved)
    assert plain.requirements == ['requests[socks]>=2.31; python_version >= "3.8"', "rich"]
    assert plain.constraints == ["urllib3<3"]
    assert {n.name for n in plain.skipped} == {"mylib", "."}


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match=r"missing\.lock"):
        load(tmp_path / "missing.lock")
    bad = tmp_path / "uv.lock"
    bad.write_text("version = [\n")
    with pytest.raises(LockFileError, match="not valid TOML"):
        load(bad)
    bad.write_text('[[package]]\nversion = "1"\n')  # no name
    with pytest.raises(LockFileError, match=r"not a valid uv\.lock"):
        load(bad)
    other = tmp_path / "deps.lock"
    other.write_text("x = 1\n")
    with pytest.raises(LockFileError, match=r"not a requirements file, uv\.lock"):
        load(other)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("alpha==1.0 --hash=md5:abc\n")
    with pytest.raises(LockFileError, match=r"requirements.txt:1: not a hash"):
        load(reqs)
    reqs.write_text("al pha ==\n")
    with pytest.raises(LockFileError, match=r"requirements.txt:1: not a requirement"):
        load(reqs)


def test_markers_on_extras_count_as_true() -> None:
    env = make_targets(["manylinux_2_17_x86_64"], ["3.11"])[0].env
    assert marker_applies("extra == 'extra-4-demo-cpu'", env)
    assert marker_applies("'dev' in dependency_groups", env)
    assert not marker_applies("python_version < '3.9'", env)
    assert marker_applies(None, env)
    assert marker_applies("  ", env)


# -- warming through a proxy ---------------------------------------------------------------


@pytest.mark.clients
async def test_real_uv_lock_warms_an_offline_proxy(
    proxy_server: TestServer,
    fake: FakeIndex,
    cache_dir: Path,
    tmp_path: Path,
    aiohttp_server: AiohttpServer,
) -> None:
    """A uv.lock written by uv itself; afterwards an offline proxy installs it alone."""
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.8"\n'
        'dependencies = ["alpha", "gamma", "nometa"]\n'
    )
    uv = uv_binary()
    lock_cmd = [uv, "lock", "--default-index", fake.index_url, "--python", sys.executable]
    await run_tool(lock_cmd, tmp_path, cwd=project)
    export = [uv, "export", "--format", "pylock.toml", "-o", "pylock.toml", "--frozen"]
    await run_tool(export, tmp_path, cwd=project)
    fake.clear_log()

    index = str(proxy_server.make_url("/simple/"))
    summary, lines = await run_warm(index, [project / "uv.lock"])
    wheels = {wheel_of(fake, p).filename for p in ("alpha", "beta", "gamma", "nometa")}
    # nometa has no PEP 658 metadata upstream; the proxy advertises what it will read from
    # the wheel (proxy/metadata.py) without a hash until it has, so warm does not fetch it.
    metadata = {f"{w}.metadata" for w in wheels if not w.startswith("nometa")}
    assert by_outcome(summary, Outcome.FETCHED) == wheels | metadata, lines
    assert by_outcome(summary, Outcome.SKIPPED) == set()  # demo is virtual: nothing to say
    assert summary.ok
    assert f"fetched {wheel_of(fake, 'beta').filename} (" in "\n".join(lines)
    for p in ("alpha", "beta", "gamma", "nometa"):
        f = wheel_of(fake, p)
        assert blob(cache_dir, f.sha256).read_bytes() == f.data
        whole = [r for r in fake.file_gets(f.filename) if "range" not in r.headers]
        assert len(whole) == 1
    assert fake.file_gets("alpha-1.0.tar.gz") == []  # a wheel fits: no sdist

    fake.clear_log()
    again, lines = await run_warm(index, [project / "uv.lock", project / "pylock.toml"])
    # By now the proxy has read nometa's METADATA from its cached wheel: listed, and cached.
    nometa_metadata = {f"{wheel_of(fake, 'nometa').filename}.metadata"}
    assert by_outcome(again, Outcome.CACHED) == wheels | metadata | nometa_metadata
    assert again.count(Outcome.FETCHED) == 0
    assert [r for r in fake.requests if r.host == "files"] == []

    # The air-gapped half: a proxy that never asks upstream serves the whole install.
    offline = await aiohttp_server(create_app(make_settings(cache_dir, index, offline=True)))
    target = tmp_path / "site"
    install = [
        uv, "pip", "install", "--no-cache", "--index-url", str(offline.make_url("/simple/")),
        "--python", sys.executable, "--target", str(target), "alpha", "gamma", "nometa",
    ]  # fmt: skip
    await run_tool(install, tmp_path)
    assert {p.name.split("-")[0] for p in target.glob("*.dist-info")} == {
        "alpha", "beta", "gamma", "nometa"
    }  # fmt: skip
    assert [r for r in fake.requests if r.host == "files"] == []


async def test_platforms_pick_their_wheel_or_the_sdist(
    proxy_server: TestServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dists"
    linux = fake.add_file(
        "native", build_wheel(out, "native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    )
    win = fake.add_file("native", build_wheel(out, "native", "1.0", tag="cp312-cp312-win_amd64"))
    sdist = fake.add_file("native", build_sdist(out, "native", "1.0"))
    lock = tmp_path / "poetry.lock"
    lock.write_text(poetry_lock_text(fake, ["native"]))
    index = str(proxy_server.make_url("/simple/"))

    summary, _ = await run_warm(
        index, [lock], platforms=["manylinux_2_17_x86_64"], pythons=["3.11"]
    )
    assert by_outcome(summary, Outcome.FETCHED) == {linux.filename, linux.filename + ".metadata"}
    assert fake.file_gets(win.filename) == fake.file_gets(sdist.filename) == []

    summary, lines = await run_warm(
        index, [lock], platforms=["win_amd64", "manylinux_2_28_x86_64"], pythons=["3.12"]
    )
    # cp312 on Linux has no wheel: the sdist is what pip would build there.
    assert by_outcome(summary, Outcome.FETCHED) == {win.filename, sdist.filename}, lines
    # Both wheels carry the same METADATA bytes, and the store is content-addressed.
    assert by_outcome(summary, Outcome.CACHED) == {win.filename + ".metadata"}
    for f in (linux, win, sdist):
        assert blob(cache_dir, f.sha256).read_bytes() == f.data

    summary, lines = await run_warm(
        index, [lock], platforms=["macosx_11_0_arm64"], pythons=["3.11"], sdists=True
    )
    assert by_outcome(summary, Outcome.CACHED) == {sdist.filename}, lines

    # Without a sdist there is nothing a Mac could install: a failure, said once per target.
    fake2 = tmp_path / "pylock.toml"
    fake2.write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n[[packages]]\nname = "native"\n'
        f'version = "1.0"\nindex = "{fake.index_url}"\n'
        f'wheels = [{{ url = "{fake.file_url(win)}", hashes = {{ sha256 = "{win.sha256}" }} }}]\n'
    )
    summary, lines = await run_warm(index, [fake2], platforms=["macosx_11_0_arm64"])
    assert lines[0].startswith("failed native 1.0: no wheel for cp311-macosx_11_0_arm64")
    assert not summary.ok


async def test_hashed_requirements(
    proxy_server: TestServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> None:
    alpha_whl, alpha_sdist = (wheel_of(fake, "alpha"), fake.files("alpha")[1])
    beta = fake.files("beta")[0]
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        f"alpha==1.0 \\\n    --hash=sha256:{alpha_whl.sha256} \\\n"
        f"    --hash=sha256:{alpha_sdist.sha256}\n"
        f"beta==1.0 --hash=sha256:{beta.sha256}\n"
        f"gamma==0.1+abc --hash=sha256:{'0' * 64}\n"
        f'nometa==1.0 ; sys_platform == "win32" --hash=sha256:{wheel_of(fake, "nometa").sha256}\n'
    )
    index = str(proxy_server.make_url("/simple/"))
    summary, lines = await run_warm(index, [reqs], platforms=["manylinux_2_17_x86_64"])
    assert by_outcome(summary, Outcome.FETCHED) == {
        alpha_whl.filename, alpha_whl.filename + ".metadata",
        beta.filename, beta.filename + ".metadata",
    }, lines  # fmt: skip
    [failed] = [r for r in summary.results if r.outcome is Outcome.FAILED]
    assert failed.name == "gamma 0.1+abc"
    assert failed.reason == (
        "the index has no file of this version with these hashes (requirements.txt:5)"
    )
    assert fake.file_gets(alpha_sdist.filename) == []
    assert blob(cache_dir, beta.sha256).read_bytes() == beta.data


async def test_pdm_lock_warms_through_the_proxy(
    proxy_server: TestServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "pdm.lock"
    lock.write_text(pdm_lock_text(fake, ["alpha", "beta"]))
    index = str(proxy_server.make_url("/simple/"))
    summary, lines = await run_warm(index, [lock], metadata=False)
    alpha, beta = wheel_of(fake, "alpha"), fake.files("beta")[0]
    assert by_outcome(summary, Outcome.FETCHED) == {alpha.filename, beta.filename}, lines
    assert summary.ok
    for f in (alpha, beta):
        assert blob(cache_dir, f.sha256).read_bytes() == f.data
    assert fake.file_gets("alpha-1.0.tar.gz") == []  # a wheel fits: no sdist


async def test_a_file_named_by_two_inputs_is_fetched_once(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    beta = fake.files("beta")[0]
    (tmp_path / "uv.lock").write_text(uv_lock_text(fake, [beta]))
    (tmp_path / "requirements.txt").write_text(f"beta==1.0 --hash=sha256:{beta.sha256}\n")
    (tmp_path / "poetry.lock").write_text(poetry_lock_text(fake, ["beta"]))
    inputs = [tmp_path / n for n in ("uv.lock", "requirements.txt", "poetry.lock")]
    index = str(proxy_server.make_url("/simple/"))
    summary, lines = await run_warm(index, inputs, metadata=False)
    assert summary.ok
    assert lines == [f"fetched {beta.filename} ({format_bytes(beta.size)}, MISS)"]
    # Inputs that disagree about its hash are both checked: the wrong one fails.
    (tmp_path / "requirements.txt").write_text(f"beta==1.0 --hash=sha256:{'e' * 64}\n")
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n[[packages]]\nname = "beta"\n'
        f'version = "1.0"\nindex = "{fake.index_url}"\nwheels = [{{ name = "{beta.filename}", '
        f'url = "{fake.file_url(beta)}", hashes = {{ sha256 = "{"f" * 64}" }} }}]\n'
    )
    _, lines = await run_warm(index, [inputs[0], tmp_path / "pylock.toml"], metadata=False)
    assert sorted(lines) == [
        f"cached {beta.filename} ({format_bytes(beta.size)}, HIT)",
        f"failed {beta.filename}: the index lists sha256 {beta.sha256[:12]}…, pylock.toml says "
        "ffffffffffff…",
    ]


def test_jobs_for_one_file_merge_unless_their_hashes_disagree() -> None:
    url = URL("http://proxy/packages/x-1-py3-none-any.whl")
    jobs: dict[str, list[Job]] = {}
    add_job(jobs, Job("x.whl", url, {"sha256": "a" * 64}, None, None, "uv.lock", "a" * 64))
    add_job(jobs, Job("x.whl", url, {}, frozenset({("sha256", "a" * 64)}), 10, "r.txt", None))
    [merged] = jobs["x.whl"]
    assert (merged.required, merged.allowed, merged.size) == (
        {"sha256": "a" * 64}, frozenset({("sha256", "a" * 64)}), 10
    )  # fmt: skip
    add_job(jobs, Job("x.whl", url, {"sha256": "b" * 64}, None, None, "pylock.toml", None))
    assert [j.origin for j in jobs["x.whl"]] == ["uv.lock", "pylock.toml"]


async def test_the_lock_is_the_truth(
    proxy_server: TestServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> None:
    """Hash and size come from the lock; the index's word does not override it."""
    beta, gamma, nometa = fake.files("beta")[0], wheel_of(fake, "gamma"), wheel_of(fake, "nometa")
    lost = f"{fake.files_url}/packages/00/11/{'2' * 60}/nometa-9.9-py3-none-any.whl"
    lock = tmp_path / "uv.lock"
    lock.write_text(
        uv_lock_text(
            fake,
            [beta, gamma, nometa],
            **{
                beta.filename: {"sha256": "ab" * 32},
                gamma.filename: {"size": gamma.size + 1},
                nometa.filename: {"url": lost},
            },
        ).replace(nometa.filename + '"', 'nometa-9.9-py3-none-any.whl"')
    )
    index = str(proxy_server.make_url("/simple/"))
    summary, lines = await run_warm(index, [lock], metadata=False)
    reasons = {r.name: r.reason for r in summary.results if r.outcome is Outcome.FAILED}
    assert reasons == {
        beta.filename: f"the index lists sha256 {beta.sha256[:12]}…, uv.lock says abababababab…",
        gamma.filename: f"size {gamma.size} bytes, uv.lock says {gamma.size + 1}",
        # Not on the page: mapped to the proxy by its /packages/ path, which has no such file.
        "nometa-9.9-py3-none-any.whl": "HTTP 404: nometa-9.9-py3-none-any.whl is not listed "
        "by the upstream index",
    }, lines
    assert fake.file_gets(beta.filename) == []  # refused before any byte was moved
    assert summary.count(Outcome.FETCHED) == 0

    # The body itself is hashed, not only compared by name.
    async with make_session(URL(index), 2) as session:
        url = proxy_server.make_url(beta.url_path)
        job = Job(beta.filename, url, {"sha256": "cd" * 32}, None, beta.size, "uv.lock", None)
        result = await fetch_file(session, job, lambda n: None)
    assert result.outcome is Outcome.FAILED
    assert result.reason == f"sha256 mismatch: uv.lock says cdcdcdcdcdcd…, got {beta.sha256[:12]}…"


async def test_upstream_failures_are_summary_lines(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    lock = tmp_path / "poetry.lock"
    lock.write_text(poetry_lock_text(fake, ["beta", "gamma"]))
    index = str(proxy_server.make_url("/simple/"))
    fake.fail_files(503)
    summary, lines = await run_warm(index, [lock], metadata=False)
    failed = {r.name: r.reason or "" for r in summary.results if r.outcome is Outcome.FAILED}
    assert set(failed) == {wheel_of(fake, "gamma").filename, "beta-1.0-py3-none-any.whl"}
    assert all(reason.startswith("HTTP 502: ") for reason in failed.values()), lines
    fake.reset_faults()
    fake.fail_pages(404)
    summary, lines = await run_warm(index, [tmp_path / "poetry.lock"], metadata=False)
    # The proxy kept the pages from the first run (fresh for 10 minutes): files go ahead.
    assert summary.count(Outcome.FETCHED) == 2, lines


async def test_rich_progress_bar_on_a_terminal(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    lock = tmp_path / "poetry.lock"
    lock.write_text(poetry_lock_text(fake, ["big", "beta"]) + "\n")
    (tmp_path / "bad.txt").write_text(f"gamma==0.1+abc --hash=sha256:{'0' * 64}\n")
    screen = io.StringIO()
    reporter = RichReporter(Console(file=screen, force_terminal=True, width=120))
    reporter.start()
    summary, _ = await run_warm(
        str(proxy_server.make_url("/simple/")), [lock, tmp_path / "bad.txt"], reporter=reporter
    )
    reporter.close()
    shown = screen.getvalue()
    assert "failed gamma 0.1+abc: the index has no file" in shown
    assert "warming" in shown
    assert "files" in shown
    assert summary.count(Outcome.FETCHED) == 4  # big and beta 1.0, and their metadata
    assert isinstance(make_reporter(io.StringIO()), PlainReporter)


@pytest.mark.clients
async def test_unhashed_requirements_resolve_for_the_target(
    aiohttp_server: AiohttpServer, fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved by pip, which is always there (uv is not a dependency); markers are
    evaluated for the target (plain pip would use this machine's, pypa/pip#11664). The
    proxy makes no metadata of its own here (--no-synthesize-metadata), so pip reads a
    wheel while resolving, which warm must count as this run's download."""
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)  # no uv anywhere
    proxy_server = await aiohttp_server(
        create_app(make_settings(tmp_path / "c", fake.index_url, synthesize_metadata=False))
    )
    out = tmp_path / "dists"
    delta = build_wheel(out, "delta", "1.0", requires=["winonly; sys_platform == 'win32'"])
    fake.add_file("delta", delta)
    winonly = fake.add_file(
        "winonly", build_wheel(out, "winonly", "1.0", tag="cp312-cp312-win_amd64")
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("delta\nnometa\nalpha ; python_version < '3'\n")
    index = str(proxy_server.make_url("/simple/"))
    linux = {"platforms": ["manylinux_2_17_x86_64"], "pythons": ["3.12"]}
    summary, lines = await run_warm(index, [reqs], **linux)
    nometa = "nometa-1.0-py3-none-any.whl"
    assert by_outcome(summary, Outcome.FETCHED) == {
        "delta-1.0-py3-none-any.whl", "delta-1.0-py3-none-any.whl.metadata", nometa
    }, lines  # fmt: skip
    # nometa has no PEP 658 metadata: pip read it from the wheel, which made the proxy
    # download it before warm asked; it is still this run's download, not "already cached".
    assert f"fetched {nometa} (" in "\n".join(lines)
    assert next(r.cache for r in summary.results if r.name == nometa) == "MISS, while resolving"
    assert len([r for r in fake.file_gets(nometa) if r.method == "GET"]) == 1
    summary, lines = await run_warm(index, [reqs], platforms=["win_amd64"], pythons=["3.12"])
    # pip read winonly's metadata while resolving for Windows: that too is this run's.
    assert by_outcome(summary, Outcome.FETCHED) == {
        winonly.filename, winonly.filename + ".metadata"
    }, lines  # fmt: skip
    assert nometa in by_outcome(summary, Outcome.CACHED)
    # No wheel for cp311 on Windows and no sdist: pip's reason, as one failure line.
    summary, lines = await run_warm(index, [reqs], platforms=["win_amd64"], pythons=["3.11"])
    [failed] = [r for r in summary.results if r.outcome is Outcome.FAILED]
    assert failed.name == "requirements.txt"
    assert (failed.reason or "").startswith("pip could not resolve it for cp311-win_amd64: ")
    assert "No matching distribution found for winonly" in (failed.reason or "")
    assert "\n" not in result_line(failed)


async def test_without_pip_the_input_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "shadow" / "pip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no pip here')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("alpha\n")
    unresolved = load(reqs)
    assert isinstance(unresolved, Unresolved)
    [target] = make_targets(["win_amd64"], ["3.12"])
    got = await resolve(unresolved, target, URL(f"http://127.0.0.1:{closed_port()}/simple/"))
    assert got == Note(
        "requirements.txt",
        "pip could not resolve it for cp312-win_amd64: pip is not usable in this Python "
        "(no pip here); install it, or pass a lock file",
    )


# -- the command line ----------------------------------------------------------------------


async def test_cli_warms_a_cache_dir_directly(fake: FakeIndex, tmp_path: Path) -> None:
    lock = tmp_path / "poetry.lock"
    lock.write_text(poetry_lock_text(fake, ["alpha", "beta"]))
    cache = tmp_path / "cache"
    args = [str(lock), "--cache-dir", str(cache), "--upstream", fake.index_url, "--no-metadata"]
    code, out, err = await warm_cli(tmp_path, *args)
    alpha, beta1 = wheel_of(fake, "alpha"), fake.files("beta")[0]
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[0] == f"warm: poetry.lock for this machine, into {cache}"
    assert f"fetched {alpha.filename} ({format_bytes(alpha.size)}, MISS)" in lines
    assert lines[-1].startswith("warm: 2 fetched (")
    assert lines[-1].endswith(" 0 already cached, 0 skipped, 0 failed")
    assert blob(cache, alpha.sha256).read_bytes() == alpha.data
    assert blob(cache, beta1.sha256).read_bytes() == beta1.data

    fake.clear_log()
    code, out, err = await warm_cli(tmp_path, *args)
    assert code == 0
    assert out.splitlines()[-1] == ("warm: 0 fetched (0 B), 2 already cached, 0 skipped, 0 failed")
    assert f"cached {alpha.filename} ({format_bytes(alpha.size)}, HIT)" in out
    assert [r for r in fake.requests if r.host == "files"] == []


async def test_cli_exit_code_one_when_something_failed(fake: FakeIndex, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(f"beta==1.0 --hash=sha256:{'0' * 64}\n-e .\n")
    cache = tmp_path / "cache"
    args = ["requirements.txt", "--cache-dir", str(cache), "--upstream", fake.index_url]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy.cli.warm", "warm", *args, cwd=tmp_path,
        env=client_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert err == b""
    assert out.decode().splitlines()[1:] == [
        "skipped .: editable (requirements.txt:2), not on an index",
        "failed beta 1.0: the index has no file of this version with these hashes "
        "(requirements.txt:1)",
        "warm: 0 fetched (0 B), 0 already cached, 1 skipped, 1 failed",
    ]


async def test_cli_takes_requirements_with_dash_r(fake: FakeIndex, tmp_path: Path) -> None:
    """``-r FILE`` as pip has it, with positional files; read as requirements by any name."""
    beta = fake.files("beta")[0]
    (tmp_path / "deps.lock").write_text(f"beta==1.0 --hash=sha256:{beta.sha256}\n")
    (tmp_path / "poetry.lock").write_text(poetry_lock_text(fake, ["alpha"]))
    cache = tmp_path / "cache"
    code, out, err = await warm_cli(
        tmp_path, str(tmp_path / "poetry.lock"), "-r", str(tmp_path / "deps.lock"),
        "--cache-dir", str(cache), "--upstream", fake.index_url, "--no-metadata",
    )  # fmt: skip
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[0] == f"warm: poetry.lock, deps.lock for this machine, into {cache}"
    assert f"fetched {beta.filename} ({format_bytes(beta.size)}, MISS)" in lines
    assert lines[-1].startswith("warm: 2 fetched (")
    assert blob(cache, beta.sha256).read_bytes() == beta.data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["uv.lock"], "give --proxy-url URL (a running proxy) or --cache-dir DIR"),
        (["uv.lock", "--proxy-url", "http://h/", "--cache-dir", "d"], "give --proxy-url"),
        (["uv.lock", "--proxy-url", "http://h/", "--upstream", "http://u/"], "--upstream goes"),
        (["uv.lock", "--proxy-url", "ftp://h/"], "--proxy-url must be an http(s) URL"),
        (["uv.lock", "--proxy-url", "http://h/", "--jobs", "0"], "--jobs must be between"),
        (["uv.lock", "--proxy-url", "http://h/", "--platform", "win"], "not a wheel platform"),
        (["nope.lock", "--proxy-url", "http://h/"], "nope.lock: No such file"),
        (["--proxy-url", "http://h/"], "the following arguments are required: FILE"),
        (["-r", "nope.txt", "--proxy-url", "http://h/"], "nope.txt: No such file"),
        (["-r", "uv.lock", "--proxy-url", "http://h/"], "uv.lock:1: not a requirement"),
        (["uv.lock", "--cache-dir", "c", "--upstream", "nonsense"], "upstream must be an http"),
    ],
)
def test_cli_usage_errors(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uv.lock").write_text((FIXTURES / "uv.lock").read_text())
    assert main(["warm", *args]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("cacheproxy: error: ")
    assert message in line, line
    assert (tmp_path / "c").exists() is False  # refused before touching anything


def test_cli_proxy_unreachable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = closed_port()
    code = main(["warm", str(FIXTURES / "poetry.lock"), "--proxy-url", f"http://127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 1
    [line] = captured.err.splitlines()
    assert line.startswith(f"cacheproxy: error: cannot reach the proxy at 127.0.0.1:{port}: ")
    assert "Traceback" not in captured.out + captured.err


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", ["requirements.in", "uv.lock", "requirements-hashed.txt"])
async def test_cli_proxy_unreachable_is_one_line(name: str, tmp_path: Path) -> None:
    """Whatever the input: requirements without hashes go through the resolver first,
    which used to print every refused request's traceback (hundreds of lines)."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}/simple/"
    code, out, err = await warm_cli(tmp_path, str(FIXTURES / name), "--proxy-url", url)
    assert code == 1
    assert err.splitlines() == [
        f"cacheproxy: error: cannot reach the proxy at 127.0.0.1:{port}: Connection refused"
    ], err
    assert out.splitlines() == [f"warm: {name} for this machine, through {url}"]


def test_output_formats() -> None:
    assert [format_bytes(n) for n in (0, 999, 1000, 12_345, 34_500_000, 2 * 10**9)] == [
        "0 B", "999 B", "1.0 kB", "12.3 kB", "34.5 MB", "2.0 GB"
    ]  # fmt: skip
    s = Summary(
        [
            Result(Outcome.FETCHED, "a.whl", size=12_300, cache="MISS"),
            Result(Outcome.CACHED, "b.whl", size=10, cache="HIT"),
            Result(Outcome.SKIPPED, "c 1.0", reason="git source"),
            Result(Outcome.FAILED, "d.whl", reason="HTTP 502: upstream failed"),
        ]
    )
    assert [result_line(r) for r in s.results] == [
        "fetched a.whl (12.3 kB, MISS)",
        "cached b.whl (10 B, HIT)",
        "skipped c 1.0: git source",
        "failed d.whl: HTTP 502: upstream failed",
    ]
    assert summary_line(s) == "warm: 1 fetched (12.3 kB), 1 already cached, 1 skipped, 1 failed"
    assert not s.ok


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("http://127.0.0.1:8503", "http://127.0.0.1:8503/simple/"),
        ("http://127.0.0.1:8503/simple", "http://127.0.0.1:8503/simple/"),
        (
            "https://cache.example.invalid/pypi/simple/",
            "https://cache.example.invalid/pypi/simple/",
        ),
    ],
)
def test_proxy_index_url(raw: str, url: str) -> None:
    assert str(proxy_index_url(raw)) == url


def test_uv_output_is_read_as_pins() -> None:
    """What uv pip compile prints: pinned, every file hash of the version."""
    text = (
        "alpha==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "beta==1.0\n"
    )
    lock = parse_requirements(Path("requirements.txt"), text, require_hashes=False)
    assert isinstance(lock, LockInput)
    assert not lock.failed
    packages = {p.label: p for p in lock.select({})[0]}
    assert packages["alpha 1.0"].allowed == frozenset({("sha256", "a" * 64), ("sha256", "b" * 64)})
    assert packages["beta 1.0"].allowed is None  # an index without hashes: any file of 1.0
