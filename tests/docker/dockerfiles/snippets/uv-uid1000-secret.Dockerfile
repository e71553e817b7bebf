# cacheproxy: RUN steps reach the proxy as "pypi-cache", mapped to the Docker bridge gateway
# 172.17.0.1 (from the local Docker engine). One name on every machine keeps the layer cache
# valid across hosts. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:172.17.0.1 .
#   docker buildx build --add-host pypi-cache:172.17.0.1 .
# The proxy must listen on that address (or 0.0.0.0), not only on 127.0.0.1; check from the host:
#   cacheproxy serve --host 172.17.0.1 --port 8503      (or: docker compose -f deploy/compose.yaml up -d)
#   python3 -c "import urllib.request as u; print(u.urlopen('http://172.17.0.1:8503/-/health').read())"
# Docker Desktop: --add-host pypi-cache:host-gateway instead (the gateway IP is inside its VM).
# The index needs a user: the credentials come from the BuildKit secret 'cacheproxy-netrc',
# a netrc file, mounted for this step only (never in a layer or `docker history`):
#   ~/.cacheproxy-netrc (chmod 600): machine pypi-cache login USER password PASSWORD
#   docker build --secret id=cacheproxy-netrc,src=$HOME/.cacheproxy-netrc ...

# uv: the index is given to this step only (inline, not ENV, which would stay in the image);
# plain http needs no trusted-host setting. UV_LINK_MODE=copy: the cache mount and the
# environment are different file systems. uv pip installs into $VIRTUAL_ENV; add --system to
# install into the image's own python.
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-uv-1000,target=/home/app/.cache/uv,sharing=shared,uid=1000,gid=1000 --mount=type=secret,id=cacheproxy-netrc,required=true,uid=1000,gid=1000 \
    NETRC=/run/secrets/cacheproxy-netrc UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/ UV_LINK_MODE=copy UV_CACHE_DIR=/home/app/.cache/uv \
    uv pip install -r requirements.txt
#
# A uv project with uv.lock: `uv sync --frozen` downloads from the URLs recorded in uv.lock
# and ignores every index setting (the proxy is bypassed), and `uv sync --locked` fails once
# the index differs from the one uv.lock was made with. Export the lock (hashes included,
# and checked) and install that through the proxy, then the project itself:
# COPY pyproject.toml uv.lock ./
# RUN --mount=type=cache,id=cacheproxy-uv-1000,target=/home/app/.cache/uv,sharing=shared,uid=1000,gid=1000 --mount=type=secret,id=cacheproxy-netrc,required=true,uid=1000,gid=1000 \
#     export NETRC=/run/secrets/cacheproxy-netrc UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/ UV_LINK_MODE=copy UV_CACHE_DIR=/home/app/.cache/uv \
#  && uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
#  && uv pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# (only the cache mount helps a plain `uv sync --frozen`:
#  RUN --mount=type=cache,id=cacheproxy-uv-1000,target=/home/app/.cache/uv,sharing=shared,uid=1000,gid=1000 --mount=type=secret,id=cacheproxy-netrc,required=true,uid=1000,gid=1000 UV_LINK_MODE=copy UV_CACHE_DIR=/home/app/.cache/uv uv sync --frozen)
