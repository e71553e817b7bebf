# cacheproxy: RUN steps reach the proxy at
#   https://pypi-cache.example.com/simple/
# The build must resolve and reach pypi-cache.example.com by itself (no extra docker build flags).
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1). Credentials never go
# in this URL (they would be in `docker history`): use a secret mount for an index needing them.
# The index needs a user: the credentials come from the BuildKit secret 'cacheproxy-netrc',
# a netrc file, mounted for this step only (never in a layer or `docker history`):
#   ~/.cacheproxy-netrc (chmod 600): machine pypi-cache.example.com login USER password PASSWORD
#   docker build --secret id=cacheproxy-netrc,src=$HOME/.cacheproxy-netrc ...

# uv: the index is given to this step only (inline, not ENV, which would stay in the image);
# plain http needs no trusted-host setting. UV_LINK_MODE=copy: the cache mount and the
# environment are different file systems. uv pip installs into $VIRTUAL_ENV; add --system to
# install into the image's own python.
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared --mount=type=secret,id=cacheproxy-netrc,required=true \
    NETRC=/run/secrets/cacheproxy-netrc UV_DEFAULT_INDEX=https://pypi-cache.example.com/simple/ UV_LINK_MODE=copy \
    uv pip install -r requirements.txt
#
# A uv project with uv.lock: `uv sync --frozen` downloads from the URLs recorded in uv.lock
# and ignores every index setting (the proxy is bypassed), and `uv sync --locked` fails once
# the index differs from the one uv.lock was made with. Export the lock (hashes included,
# and checked) and install that through the proxy, then the project itself:
# COPY pyproject.toml uv.lock ./
# RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared --mount=type=secret,id=cacheproxy-netrc,required=true \
#     export NETRC=/run/secrets/cacheproxy-netrc UV_DEFAULT_INDEX=https://pypi-cache.example.com/simple/ UV_LINK_MODE=copy \
#  && uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
#  && uv pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# (only the cache mount helps a plain `uv sync --frozen`:
#  RUN --mount=type=cache,id=cacheproxy-uv,target=/root/.cache/uv,sharing=shared --mount=type=secret,id=cacheproxy-netrc,required=true UV_LINK_MODE=copy uv sync --frozen)
