# cacheproxy: RUN steps reach the proxy at
#   https://pypi-cache.example.com/simple/
# The build must resolve and reach pypi-cache.example.com by itself (no extra docker build flags).
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1). Credentials never go
# in this URL (they would be in `docker history`): use a secret mount for an index needing them.

# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared \
    PIP_INDEX_URL=https://pypi-cache.example.com/simple/ \
    pip install -r requirements.txt
