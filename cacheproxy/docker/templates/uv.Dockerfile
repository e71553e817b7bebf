@reach
# uv: the index is given to this step only (inline, not ENV, which would stay in the image);
# plain http needs no trusted-host setting. UV_LINK_MODE=copy: the cache mount and the
# environment are different file systems. uv pip installs into $VIRTUAL_ENV; add --system to
# install into the image's own python.
@{copy}RUN --mount=@uv_mount \
    @uv_env \
    uv pip install @args
#
# A uv project with uv.lock: `uv sync --frozen` downloads from the URLs recorded in uv.lock
# and ignores every index setting (the proxy is bypassed), and `uv sync --locked` fails once
# the index differs from the one uv.lock was made with. Export the lock (hashes included,
# and checked) and install that through the proxy, then the project itself:
# COPY pyproject.toml uv.lock ./
# RUN --mount=@uv_mount \
#     export @uv_env \
#  && uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
#  && uv pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# (only the cache mount helps a plain `uv sync --frozen`:
#  RUN --mount=@uv_mount @uv_sync_env uv sync --frozen)
