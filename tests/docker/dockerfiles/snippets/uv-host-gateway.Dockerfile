# cacheproxy: RUN steps reach the proxy as "pypi-cache", which Docker maps to the host
# ("host-gateway"). One name on every machine keeps the layer cache valid across hosts.
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:host-gateway .
#   docker buildx build --add-host pypi-cache:host-gateway .
# host-gateway fails in some docker build releases (Docker 23.0.0, 25.0.0, buildx with the
# docker-container driver): then pass the bridge gateway IP, --add-host pypi-cache:172.17.0.1
# (`cacheproxy dockerfile --reach gateway-ip` asks the engine for it).
# On Linux the proxy must listen on the bridge address (or 0.0.0.0), not only on 127.0.0.1.

# uv: the index is given to this step only (inline, not ENV, which would stay in the image);
# plain http needs no trusted-host setting. UV_LINK_MODE=copy: the cache mount and the
# environment are different file systems. uv pip installs into $VIRTUAL_ENV; add --system to
# install into the image's own python.
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared \
    UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/ UV_LINK_MODE=copy \
    uv pip install -r requirements.txt
#
# A uv project with uv.lock: `uv sync --frozen` downloads from the URLs recorded in uv.lock
# and ignores every index setting (the proxy is bypassed), and `uv sync --locked` fails once
# the index differs from the one uv.lock was made with. Export the lock (hashes included,
# and checked) and install that through the proxy, then the project itself:
# COPY pyproject.toml uv.lock ./
# RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared \
#     export UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/ UV_LINK_MODE=copy \
#  && uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
#  && uv pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# (only the cache mount helps a plain `uv sync --frozen`:
#  RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared UV_LINK_MODE=copy uv sync --frozen)
