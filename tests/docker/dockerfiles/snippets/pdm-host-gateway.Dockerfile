# cacheproxy: RUN steps reach the proxy as "pypi-cache", which Docker maps to the host
# ("host-gateway"). One name on every machine keeps the layer cache valid across hosts.
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:host-gateway .
#   docker buildx build --add-host pypi-cache:host-gateway .
# host-gateway fails in some docker build releases (Docker 23.0.0, 25.0.0, buildx with the
# docker-container driver): then pass the bridge gateway IP, --add-host pypi-cache:172.17.0.1
# (`cacheproxy dockerfile --reach gateway-ip` asks the engine for it).
# On Linux the proxy must listen on the bridge address (or 0.0.0.0), not only on 127.0.0.1.

# pdm: PDM_PYPI_URL points pdm's default source at the proxy for this step only (inline,
# not ENV, which would stay in the image); PDM_PYPI_VERIFY_SSL=false is how pdm trusts a
# plain-http index on a non-loopback host. pdm must already be in the image. A pdm.lock made
# with --static-urls installs from the recorded URLs and bypasses the proxy.
COPY pyproject.toml pdm.lock ./
RUN --mount=type=cache,id=cacheproxy-pdm,target=/root/.cache/pdm,sharing=locked \
    PDM_PYPI_URL=http://pypi-cache:8503/simple/ PDM_PYPI_VERIFY_SSL=false \
    pdm install --check --prod --no-editable
