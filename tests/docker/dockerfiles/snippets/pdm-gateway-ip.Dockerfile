# cacheproxy: RUN steps reach the proxy as "pypi-cache", mapped to the Docker bridge gateway
# 172.17.0.1 (from the local Docker engine). One name on every machine keeps the layer cache
# valid across hosts. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:172.17.0.1 .
#   docker buildx build --add-host pypi-cache:172.17.0.1 .
# The proxy must listen on that address (or 0.0.0.0), not only on 127.0.0.1; check from the host:
#   cacheproxy serve --host 172.17.0.1 --port 8503      (or: docker compose -f deploy/compose.yaml up -d)
#   python3 -c "import urllib.request as u; print(u.urlopen('http://172.17.0.1:8503/-/health').read())"
# Docker Desktop: --add-host pypi-cache:host-gateway instead (the gateway IP is inside its VM).

# pdm: PDM_PYPI_URL points pdm's default source at the proxy for this step only (inline,
# not ENV, which would stay in the image); PDM_PYPI_VERIFY_SSL=false is how pdm trusts a
# plain-http index on a non-loopback host. pdm must already be in the image. A pdm.lock made
# with --static-urls installs from the recorded URLs and bypasses the proxy.
COPY pyproject.toml pdm.lock ./
RUN --mount=type=cache,id=cacheproxy-pdm,target=/root/.cache/pdm,sharing=locked \
    PDM_PYPI_URL=http://pypi-cache:8503/simple/ PDM_PYPI_VERIFY_SSL=false \
    pdm install --check --prod --no-editable
