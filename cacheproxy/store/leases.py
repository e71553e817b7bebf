"""Leases in the object store: one upstream download per file across all replicas.

A lease is a small JSON object, ``{holder, token, expires_at, serial}``, at
``<prefix>/<name>`` in the store. Every step is one conditional request, so two replicas
racing for the same lease are ordered by the store itself:

* acquire: a create-only put (``If-None-Match: *``). If a lease exists and its expiry
  (plus ``max_skew``) has passed, it is taken over by compare-and-swap on the entity tag
  read with it: of any number of contenders, exactly one swap succeeds.
* renew: compare-and-swap on the tag of our last write, with a later expiry. It fails once
  another replica took the lease over, which tells the holder to stop.
* release: delete only if the tag is still ours (``If-Match`` on DeleteObject).

Time comes from an injected ``clock`` (wall time, seconds) because the replicas share only
the store: expiry is an absolute time written by the holder and read by the others, so their
clocks must agree to within ``max_skew``, which a contender waits out beyond the expiry.
A holder treats its lease as valid until ``expires_at`` by its own clock and renews well
before (a third of the TTL is left is a good time).

botocore retries a request whose answer was lost; if the first attempt had landed, the retry
gets 412 although the write is ours. Each acquisition has a random token and each write a
serial, so on a 412 we read the lease back and recognise our own write.
"""

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from cacheproxy.store.objectstore import ObjectBytes, ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "leases"
DEFAULT_MAX_SKEW = 2.0


@dataclass(frozen=True)
class LeaseState:
    """What a lease object says: who holds it, with which token, until when."""

    holder: str
    token: str
    expires_at: float
    serial: int

    def encode(self) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "token": self.token,
                "expires_at": self.expires_at,
                "serial": self.serial,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> "LeaseState | None":
        """The state in ``data``, or None when it is not a lease we wrote (takeable)."""
        try:
            raw = json.loads(data)
            return cls(
                holder=str(raw["holder"]),
                token=str(raw["token"]),
                expires_at=float(raw["expires_at"]),
                serial=int(raw["serial"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Lease:
    """A lease this replica holds: its state and the entity tag of our last write."""

    name: str
    state: LeaseState
    etag: str

    @property
    def expires_at(self) -> float:
        return self.state.expires_at


class Leases:
    """Leases named by file, held by ``holder`` (a replica id unique in the team)."""

    def __init__(
        self,
        store: ObjectStore,
        holder: str,
        *,
        ttl: float,
        clock: Callable[[], float] = time.time,
        max_skew: float = DEFAULT_MAX_SKEW,
        prefix: str = PREFIX,
    ) -> None:
        if ttl <= 0 or max_skew < 0:
            raise ValueError("a lease needs a positive TTL and a non-negative skew")
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.max_skew = max_skew
        self.prefix = prefix

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def valid(self, lease: Lease) -> bool:
        """Whether ``lease`` is still ours to act on, by this replica's clock."""
        return self.clock() < lease.expires_at

    async def current(self, name: str) -> LeaseState | None:
        """Who holds the lease on ``name`` (expired or not), or None when nobody does."""
        found = await self.store.get(self._key(name))
        return LeaseState.decode(found.data) if found is not None else None

    async def acquire(self, name: str) -> Lease | None:
        """Take the lease on ``name``: ours, or None while another replica holds it."""
        token = secrets.token_hex(16)
        # A lease released between our failed create and our read is gone: create again.
        # Bounded, because a stream of other replicas' short leases must not spin us.
        for _ in range(3):
            state = LeaseState(self.holder, token, self.clock() + self.ttl, 0)
            etag = await self.store.put_create_only(self._key(name), state.encode())
            if etag is not None:
                return Lease(name, state, etag)
            found = await self.store.get(self._key(name))
            if found is None:
                continue
            return await self._take_over(name, token, found)
        return None

    async def _take_over(self, name: str, token: str, found: ObjectBytes) -> Lease | None:
        seen = LeaseState.decode(found.data)
        if seen is not None and seen.token == token:
            return Lease(name, seen, found.info.etag)  # our create landed; its answer was lost
        if seen is not None and self.clock() < seen.expires_at + self.max_skew:
            return None
        if seen is not None:
            logger.info("lease %s: taking over from %s, expired", name, seen.holder)
        state = LeaseState(self.holder, token, self.clock() + self.ttl, 0)
        etag = await self.store.put_if_match(self._key(name), state.encode(), found.info.etag)
        if etag is not None:
            return Lease(name, state, etag)
        return await self._ours_after_412(name, state)

    async def _ours_after_412(self, name: str, state: LeaseState) -> Lease | None:
        """Our write if it is what the store holds now (a retried request), else None."""
        found = await self.store.get(self._key(name))
        if found is not None and LeaseState.decode(found.data) == state:
            return Lease(name, state, found.info.etag)
        return None

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease`` by a TTL from now; None when it is no longer ours."""
        state = replace(
            lease.state, expires_at=self.clock() + self.ttl, serial=lease.state.serial + 1
        )
        etag = await self.store.put_if_match(self._key(lease.name), state.encode(), lease.etag)
        if etag is not None:
            return Lease(lease.name, state, etag)
        return await self._ours_after_412(lease.name, state)

    async def release(self, lease: Lease) -> bool:
        """Give ``lease`` up; False when it was no longer ours (nothing is removed then)."""
        return await self.store.delete(self._key(lease.name), etag=lease.etag)
