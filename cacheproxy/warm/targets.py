"""The machines ``cacheproxy warm`` fills the cache for: every ``--platform`` for every
``--python-version``.

Each target carries its compatible wheel tags in priority order (``packaging.tags``, the
order installers use), its PEP 508 marker environment, and the pip flags that make pip's
resolver pick files for it (``resolve.py``).
"""

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packaging.markers import default_environment
from packaging.tags import (
    Tag,
    compatible_tags,
    cpython_tags,
    mac_platforms,
    platform_tags,
    sys_tags,
)
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from cacheproxy.errors import ConfigError

PLATFORM_HELP = "manylinux_2_17_x86_64, musllinux_1_2_aarch64, win_amd64, macosx_11_0_arm64"


@dataclass(frozen=True)
class Target:
    """One machine to warm for: its wheel tags in priority order and its marker values."""

    label: str
    tags: tuple[Tag, ...]
    env: Mapping[str, str]
    python: Version  # for requires-python checks
    # pip's flags to resolve for it (--python-version, --platform …); () for this machine.
    pip_args: tuple[str, ...] = ()
    _rank: dict[Tag, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rank.update((tag, n) for n, tag in reversed(list(enumerate(self.tags))))

    def rank(self, filename: str) -> int | None:
        """The wheel's priority here (lower is better), None if it cannot be installed."""
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            return None
        ranks = [self._rank[t] for t in tags if t in self._rank]
        return min(ranks) if ranks else None


_PY_VERSION = re.compile(r"3\.(\d{1,2})(?:\.(\d{1,3}))?")
_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_WINDOWS = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}  # -> platform_machine


@dataclass(frozen=True)
class Platform:
    """A ``--platform``: the wheel platform tags such a machine accepts (best first)."""

    platforms: tuple[str, ...]
    env: Mapping[str, str]


def _manylinux(minor: int, arch: str) -> list[str]:
    # As packaging's _manylinux: every older glibc too, with the legacy aliases; the oldest
    # manylinux is 2.5 on x86 and 2.17 elsewhere.
    low = 5 if arch in ("x86_64", "i686") else 17
    out = []
    for m in range(minor, low - 1, -1):
        out.append(f"manylinux_2_{m}_{arch}")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(m)
        if legacy and (m == 17 or arch in ("x86_64", "i686")):
            out.append(f"{legacy}_{arch}")
    return out


def _linux_env(arch: str) -> dict[str, str]:
    return {"sys_platform": "linux", "os_name": "posix", "platform_system": "Linux",
            "platform_machine": arch}  # fmt: skip


def parse_platform(tag: str) -> Platform:
    """A wheel platform tag as given to ``--platform``.

    Raises:
        ConfigError: not a platform tag we know how to describe.
    """
    tag = tag.strip().lower().replace("-", "_").replace(".", "_")
    for legacy, (major, minor) in _MANYLINUX_LEGACY.items():
        if tag.startswith(legacy + "_"):
            tag = f"manylinux_{major}_{minor}_{tag[len(legacy) + 1 :]}"
    if m := re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag):
        minor, arch = int(m[1]), m[2]
        return Platform(tuple(_manylinux(minor, arch)), _linux_env(arch))
    if m := re.fullmatch(r"musllinux_1_(\d+)_(\w+)", tag):
        minor, arch = int(m[1]), m[2]
        plats = tuple(f"musllinux_1_{n}_{arch}" for n in range(minor, -1, -1))
        return Platform(plats, _linux_env(arch))
    if m := re.fullmatch(r"linux_(\w+)", tag):
        return Platform((tag,), _linux_env(m[1]))
    if tag in _WINDOWS:
        env = {"sys_platform": "win32", "os_name": "nt", "platform_system": "Windows",
               "platform_machine": _WINDOWS[tag]}  # fmt: skip
        return Platform((tag,), env)
    if m := re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", tag):
        major, minor, arch = int(m[1]), int(m[2]), m[3]
        if arch not in ("arm64", "x86_64", "universal2"):
            raise ConfigError(f"--platform {tag}: macOS arch must be arm64, x86_64 or universal2")
        machine = "x86_64" if arch == "x86_64" else "arm64"
        env = {"sys_platform": "darwin", "os_name": "posix", "platform_system": "Darwin",
               "platform_machine": machine}  # fmt: skip
        plats = (tag, *(p for p in mac_platforms((major, minor), machine) if p != tag))
        return Platform(plats, env)
    raise ConfigError(f"--platform {tag!r} is not a wheel platform tag such as {PLATFORM_HELP}")


def parse_python_version(raw: str) -> tuple[int, int, int]:
    """``3.11`` or ``3.11.4`` (CPython 3 only); a missing patch is 0, as pip assumes.

    Raises:
        ConfigError: anything else.
    """
    m = _PY_VERSION.fullmatch(raw.strip())
    if m is None:
        raise ConfigError(f"--python-version must look like 3.11 or 3.11.4, not {raw!r}")
    return 3, int(m[1]), int(m[2] or 0)


def _host_env() -> dict[str, str]:
    return {k: str(v) for k, v in default_environment().items()}


def _python_env(version: tuple[int, int, int]) -> dict[str, str]:
    full = ".".join(map(str, version))
    return {
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": full,
        "python_version": f"{version[0]}.{version[1]}",
        "python_full_version": full,
    }


def _tags(version: tuple[int, int, int], platforms: Sequence[str]) -> tuple[Tag, ...]:
    short = version[:2]
    interpreter = f"cp{short[0]}{short[1]}"
    return (
        *cpython_tags(python_version=short, platforms=platforms),
        *compatible_tags(python_version=short, interpreter=interpreter, platforms=platforms),
    )


def _pip_args(version: tuple[int, int, int], platforms: Sequence[str]) -> tuple[str, ...]:
    # Every accepted platform tag is passed: pip expands only some of them itself
    # (pip/_internal/utils/compatibility_tags.py), and warm's list is the one it chooses by.
    args = ["--python-version", ".".join(map(str, version)), "--implementation", "cp"]
    for plat in platforms:
        args += ["--platform", plat]
    return tuple(args)


def make_targets(platforms: Sequence[str], pythons: Sequence[str]) -> list[Target]:
    """Every (platform, Python) pair; an axis not given is this machine's.

    Raises:
        ConfigError: a platform or version cannot be understood.
    """
    here = sys.version_info
    if not platforms and not pythons:
        env = _host_env()
        return [Target("this machine", tuple(sys_tags()), env, Version(env["python_full_version"]))]
    versions = [parse_python_version(p) for p in pythons] or [(here[0], here[1], here[2])]
    parsed = [parse_platform(p) for p in dict.fromkeys(platforms)]
    targets = []
    for version in dict.fromkeys(versions):
        py = f"{version[0]}.{version[1]}" + (f".{version[2]}" if version[2] else "")
        cp = f"cp{version[0]}{version[1]}"
        if not parsed:  # another Python on this machine's platform
            env = {**_host_env(), **_python_env(version)}
            plats = list(platform_tags())
            targets.append(
                Target(
                    f"{cp} on this machine", _tags(version, plats), env, Version(py),
                    _pip_args(version, ()),
                )
            )  # fmt: skip
            continue
        for plat in parsed:
            env = {**_python_env(version), **plat.env, "platform_release": "",
                   "platform_version": ""}  # fmt: skip
            targets.append(
                Target(
                    label=f"{cp}-{plat.platforms[0]}",
                    tags=_tags(version, plat.platforms),
                    env=env,
                    python=Version(py),
                    pip_args=_pip_args(version, plat.platforms),
                )
            )
    return targets
