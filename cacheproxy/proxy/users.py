"""Users: who may upload (and, with ``--auth-reads``, read), from an htpasswd file.

The file is what ``htpasswd -B`` writes: ``name:$2y$...`` lines with bcrypt hashes, so a
team can manage it with Apache's tool or with ``cacheproxy user add``. Only bcrypt is
accepted (the other htpasswd schemes are fast hashes or crypt(3)).

A bcrypt check costs tens to hundreds of milliseconds of CPU by design, and clients send
credentials with every request: a verified user:password pair is remembered for
REMEMBER_SECONDS as an HMAC under a key made at start (never the password itself), in a
bounded map. Failed attempts are logged (user name and client address, never the
password) and, past MAX_FAILURES in FAILURE_WINDOW seconds from one address, refused
without a bcrypt check until the window passes. They are counted in the cache directory
(store/logins.py), so the workers of one ``serve --workers N`` share one limit rather
than giving a guesser N times the attempts.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import bcrypt

from cacheproxy.errors import ConfigError
from cacheproxy.store.logins import SharedFailures, logins_dir

logger = logging.getLogger(__name__)

REMEMBER_SECONDS = 60.0
REMEMBER_ENTRIES = 1024
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
RELOAD_CHECK = 2.0  # seconds between looks at the file's mtime
# bcrypt's cost for new hashes: htpasswd -B's default is 5, far too cheap today; 12 is
# bcrypt's own default (0.26 s a check on a 2-core machine), and the verified-pair memory
# above makes its cost once a minute per user.
BCRYPT_ROUNDS = 12
_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


def parse_users(text: str, source: str) -> dict[str, bytes]:
    """``name -> bcrypt hash`` from htpasswd text.

    Raises:
        ConfigError: a line that is not ``name:<bcrypt hash>``.
    """
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name or not hashed.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(
                f"{source} line {number}: not name:<bcrypt hash> (write it with "
                "`htpasswd -B` or `cacheproxy user add`)"
            )
        users[name] = hashed.encode()
    return users


def check_password(hashed: bytes, password: str) -> bool:
    """bcrypt, slow on purpose: call it in a thread."""
    try:
        return bcrypt.checkpw(password.encode(), hashed)
    except ValueError:  # a malformed hash in the file
        return False


def hash_password(password: str) -> str:
    """A bcrypt hash in htpasswd -B's spelling ($2y$: the same algorithm as $2b$)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    return "$2y$" + hashed[4:]


def write_user(path: Path, name: str, password: str) -> bool:
    """Add ``name`` to the htpasswd file (or replace its hash); True when it was new.

    The file is replaced whole (a temporary, then a rename) and is readable by its owner
    only: the hashes are slow to crack, not impossible.

    Raises:
        ConfigError: a bad name, or the file is not a users file.
        OSError: it cannot be written.
    """
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ConfigError(f"a user name has no ':' and no spaces: {name!r}")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    parse_users(text, str(path))  # refuse to rewrite something that is not ours
    lines = [ln for ln in text.splitlines() if ln.partition(":")[0].strip() != name]
    new = len(lines) == len(text.splitlines())
    lines.append(f"{name}:{hash_password(password)}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new


class Users:
    """The users file, loaded at start and again when it changes. Create with
    :meth:`for_cache`; :meth:`close` when done."""

    def __init__(
        self, path: Path, failures: SharedFailures, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._failures = failures
        self._clock = clock
        self._users: Mapping[str, bytes] = {}
        self._mtime: float | None = None
        self._checked_at = clock()
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        self._load()

    @classmethod
    def for_cache(cls, path: Path, cache_dir: Path) -> "Users":
        """The users file ``path``, its failed logins counted with every other process
        serving ``cache_dir``.

        Raises:
            ConfigError: the file cannot be read or has a bad line.
        """
        failures = SharedFailures(logins_dir(cache_dir), MAX_FAILURES, FAILURE_WINDOW)
        try:
            return cls(path, failures)
        except BaseException:
            failures.close()
            raise

    def close(self) -> None:
        self._failures.close()

    def _load(self) -> None:
        """Read the file.

        Raises:
            ConfigError: it cannot be read or has a bad line.
        """
        try:
            stat = self._path.stat()
            text = self._path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read users file {self._path}: {e}") from e
        self._users = parse_users(text, str(self._path))
        self._mtime = stat.st_mtime
        self._verified.clear()  # a changed or removed password must stop working

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < RELOAD_CHECK:
            return
        self._checked_at = now
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return  # keep the users we have; the next look may find it back
        if mtime != self._mtime:
            try:
                self._load()
                logger.info("users file %s reloaded: %d users", self._path, len(self._users))
            except ConfigError as e:
                logger.error("%s; keeping the users loaded before", e)

    def __len__(self) -> int:
        return len(self._users)

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now), by the failures of
        every process on this cache directory."""
        return self._failures.blocked_for(address)

    async def _failed(self, address: str, user: str, why: str) -> None:
        logger.warning("authentication failed for user %r from %s: %s", user[:100], address, why)
        await asyncio.to_thread(self._failures.add, address)  # a shared write: may wait

    async def verify(self, user: str, password: str, address: str) -> bool:
        """Whether ``user:password`` is valid. A failure is logged and counted."""
        self._maybe_reload()
        hashed = self._users.get(user)
        if hashed is None:
            await self._failed(address, user, "no such user")
            return False
        mac = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = self._clock()
        expiry = self._verified.get(mac)
        if expiry is not None and now < expiry:
            return True
        # One bcrypt check per pair at a time: uv opens dozens of connections at once, all
        # with the same new credentials, and each check is a fraction of a CPU second.
        check = self._checking.get(mac)
        if check is None:
            check = asyncio.ensure_future(asyncio.to_thread(check_password, hashed, password))
            self._checking[mac] = check
            check.add_done_callback(lambda _f: self._checking.pop(mac, None))
        if await asyncio.shield(check):
            self._verified[mac] = now + REMEMBER_SECONDS
            self._verified.move_to_end(mac)
            while len(self._verified) > REMEMBER_ENTRIES:
                self._verified.popitem(last=False)
            return True
        self._verified.pop(mac, None)
        await self._failed(address, user, "wrong password")
        return False
