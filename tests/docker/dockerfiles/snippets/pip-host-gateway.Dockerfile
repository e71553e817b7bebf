# cacheproxy: RUN steps reach the proxy as "pypi-cache", which Docker maps to the host
# ("host-gateway"). One name on every machine keeps the layer cache valid across hosts.
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:host-gateway .
#   docker buildx build --add-host pypi-cache:host-gateway .
# host-gateway fails in some docker build releases (Docker 23.0.0, 25.0.0, buildx with the
# docker-container driver): then pass the bridge gateway IP, --add-host pypi-cache:172.17.0.1
# (`cacheproxy dockerfile --reach gateway-ip` asks the engine for it).
# On Linux the proxy must listen on the bridge address (or 0.0.0.0), not only on 127.0.0.1.

# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared \
    PIP_INDEX_URL=http://pypi-cache:8503/simple/ PIP_TRUSTED_HOST=pypi-cache \
    pip install -r requirements.txt
