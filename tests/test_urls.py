"""urls.py: which hosts pip treats as loopback (its SECURE_ORIGINS), one rule for everyone."""

import pytest

from cacheproxy.urls import is_loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.10.0.2", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("[::1]", True),  # as written in a URL
        ("app.localhost", False),  # not in pip's list: pip wants --trusted-host there
        ("172.17.0.1", False),
        ("pypi-cache", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
