"""Failed logins shared by the processes of one cache directory (store/logins.py)."""

import threading
from pathlib import Path

from cacheproxy.store.logins import SharedFailures, logins_dir, seconds_blocked


def test_two_instances_on_one_directory_share_the_count(tmp_path: Path) -> None:
    now = [1000.0]
    first, second = (
        SharedFailures(logins_dir(tmp_path), 4, 60.0, clock=lambda: now[0]) for _ in range(2)
    )
    for store in (first, second, first):
        store.add("127.0.0.2")
    assert first.blocked_for("127.0.0.2") == second.blocked_for("127.0.0.2") == 0.0
    second.add("127.0.0.2")
    assert first.blocked_for("127.0.0.2") == 60.0
    assert second.blocked_for("127.0.0.3") == 0.0  # another address
    now[0] += 45.0
    assert second.blocked_for("127.0.0.2") == 15.0
    now[0] += 15.0  # the oldest failure leaves the window
    assert first.blocked_for("127.0.0.2") == 0.0
    first.close()
    second.close()


def test_failures_added_at_once_by_two_instances_all_count(tmp_path: Path) -> None:
    # Each add is a read-modify-write in one transaction: none overwrites another's.
    stores = [SharedFailures(logins_dir(tmp_path), 80, 600.0) for _ in range(2)]
    start = threading.Barrier(4)

    def fail(store: SharedFailures) -> None:
        start.wait()
        for _ in range(20):
            store.add("127.0.0.2")

    threads = [threading.Thread(target=fail, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].blocked_for("127.0.0.2") > 0  # all 80 counted
    for store in stores:
        store.close()


def test_seconds_blocked_counts_the_last_failures_within_the_window() -> None:
    assert seconds_blocked([], 100.0, 2, 60.0) == 0.0
    assert seconds_blocked([10.0, 90.0], 100.0, 2, 60.0) == 0.0  # 10.0 is outside it
    assert seconds_blocked([50.0, 90.0], 100.0, 2, 60.0) == 10.0
    assert seconds_blocked([45.0, 50.0, 90.0], 100.0, 2, 60.0) == 10.0  # the last two


def test_a_damaged_store_is_moved_aside(tmp_path: Path) -> None:
    directory = logins_dir(tmp_path)
    SharedFailures(directory, 2, 60.0).close()
    (directory / "cache.db").write_bytes(bytes(range(256)) * 16)
    store = SharedFailures(directory, 2, 60.0)
    assert store.blocked_for("127.0.0.2") == 0.0
    store.close()
    assert list(tmp_path.glob("logins.broken-*")) != []
