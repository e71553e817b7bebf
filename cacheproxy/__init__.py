"""cacheproxy: a streaming, single-flight PyPI caching proxy (PEP 503 / PEP 691)."""

from importlib.metadata import PackageNotFoundError, version

# The distribution's name differs from the import package's: the index's name
# `cacheproxy` belongs to an unrelated project (pyproject.toml, [project] name).
DISTRIBUTION = "cacheproxy-index"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
