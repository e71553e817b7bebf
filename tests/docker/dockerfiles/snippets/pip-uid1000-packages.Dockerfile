# cacheproxy: RUN steps reach the proxy as "pypi-cache", mapped to the Docker bridge gateway
# 172.17.0.1 (from the local Docker engine). One name on every machine keeps the layer cache
# valid across hosts. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:172.17.0.1 .
#   docker buildx build --add-host pypi-cache:172.17.0.1 .
# The proxy must listen on that address (or 0.0.0.0), not only on 127.0.0.1; check from the host:
#   cacheproxy serve --host 172.17.0.1 --port 8503      (or: docker compose -f deploy/compose.yaml up -d)
#   python3 -c "import urllib.request as u; print(u.urlopen('http://172.17.0.1:8503/-/health').read())"
# Docker Desktop: --add-host pypi-cache:host-gateway instead (the gateway IP is inside its VM).

# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
RUN --mount=type=cache,id=cacheproxy-pip-1000,target=/home/app/.cache/pip,sharing=shared,uid=1000,gid=1000 \
    PIP_INDEX_URL=http://pypi-cache:8503/simple/ PIP_TRUSTED_HOST=pypi-cache PIP_CACHE_DIR=/home/app/.cache/pip \
    pip install requests==2.32.3 rich
