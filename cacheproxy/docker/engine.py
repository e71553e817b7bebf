"""What the local Docker engine says about reaching the build host from a RUN step.

``cacheproxy dockerfile`` maps the stable alias to the bridge gateway IP itself rather than
trusting ``host-gateway``, which broke for ``docker build`` in several releases
(moby#44525, docker/cli#4025 in 23.0.0, docker/cli#4817 in 25.0.0). The engine is asked with
the ``docker`` CLI (it honours DOCKER_HOST and contexts), with a short timeout per call; any
failure gives an :class:`Engine` that says so, never an exception and never a hang.
The runner is injected, so unit tests need no Docker.
"""

import ipaddress
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# (docker arguments, timeout in seconds) -> stdout, or None when the call failed in any way.
Runner = Callable[[Sequence[str], float], str | None]

TIMEOUT = 3.0  # per call; an engine that is up answers `docker info` in well under a second


def run_docker(argv: Sequence[str], timeout: float) -> str | None:
    """Run ``docker ARGV`` and return its stdout, or None if it is missing, fails or hangs."""
    try:
        proc = subprocess.run(
            ["docker", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # not installed, not executable, timed out
        return None
    return proc.stdout if proc.returncode == 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Engine:
    """The facts about the engine that decide how a build reaches the host."""

    reachable: bool
    version: str | None = None
    desktop: bool = False  # Docker Desktop: the bridge gateway is inside its VM
    rootless: bool = False  # the bridge gateway is inside rootlesskit's namespace
    gateway: str | None = None  # the default bridge's IPv4 gateway, None if not found
    gateway_source: str = ""  # how it was found, for the generated comment

    @property
    def note(self) -> str:
        """A short phrase for the snippet comment: where the gateway IP came from."""
        if self.gateway is not None:
            return self.gateway_source
        if not self.reachable:
            return "not detected: no Docker engine answered; Docker's default bridge gateway"
        return "not detected: the engine reported no bridge gateway; Docker's default"


def probe_engine(run: Runner = run_docker, timeout: float = TIMEOUT) -> Engine:
    """Ask the engine (``docker info``, ``docker network inspect bridge``)."""
    info = _json(run(["info", "--format", "{{json .}}"], timeout))
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        # `docker info` prints the client part and exits non-zero without a server; an old
        # CLI may print {"ServerErrors": [...]}: either way there is no engine to ask.
        return Engine(reachable=False)
    security = info.get("SecurityOptions") or []
    engine = Engine(
        reachable=True,
        version=str(info["ServerVersion"]),
        desktop="docker desktop" in str(info.get("OperatingSystem", "")).lower(),
        rootless=any("name=rootless" in str(opt) for opt in security),
    )
    gateway, source = _bridge_gateway(
        run(["network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"], timeout)
    )
    if gateway is None:
        return engine
    return Engine(
        reachable=True,
        version=engine.version,
        desktop=engine.desktop,
        rootless=engine.rootless,
        gateway=gateway,
        gateway_source=source,
    )


def _json(text: str | None) -> object:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _bridge_gateway(text: str | None) -> tuple[str | None, str]:
    """The IPv4 gateway of the bridge network from its IPAM config.

    Docker 20.10 leaves ``Gateway`` out of the default bridge's IPAM config on a fresh
    daemon (seen with 20.10.24: only ``Subnet``); the bridge then has the subnet's first
    address, which is what Docker's default IPAM gives it.
    """
    config = _json(text)
    if not isinstance(config, list):
        return None, ""
    for entry in config:
        if isinstance(entry, dict) and _ipv4(entry.get("Gateway")):
            return str(entry["Gateway"]), "from the local Docker engine"
    for entry in config:
        if not isinstance(entry, dict):
            continue
        try:
            subnet = ipaddress.ip_network(str(entry.get("Subnet")), strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(
                subnet.network_address + 1
            ), f"the first address of the engine's bridge {subnet}"
    return None, ""


def _ipv4(value: object) -> bool:
    try:
        return ipaddress.ip_address(str(value)).version == 4
    except ValueError:
        return False
