"""cacheproxy: a streaming, single-flight PyPI caching proxy (PEP 503 / PEP 691)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cacheproxy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
