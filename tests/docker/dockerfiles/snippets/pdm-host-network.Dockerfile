# cacheproxy: RUN steps share the host's network (--network=host), so the proxy can stay on
# 127.0.0.1. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --network=host .
#   docker buildx build --allow network.host --network=host .
# A docker-container builder also needs the entitlement when it is created:
#   docker buildx create --driver docker-container --buildkitd-flags '--allow-insecure-entitlement network.host'
# The URL differs from the alias form (http://pypi-cache:PORT), so the layer cache is not
# shared with hosts that build the other way.

# pdm: PDM_PYPI_URL points pdm's default source at the proxy for this step only (inline,
# not ENV, which would stay in the image); PDM_PYPI_VERIFY_SSL=false is how pdm trusts a
# plain-http index on a non-loopback host. pdm must already be in the image. A pdm.lock made
# with --static-urls installs from the recorded URLs and bypasses the proxy.
COPY pyproject.toml pdm.lock ./
RUN --mount=type=cache,id=cacheproxy-pdm,target=/root/.cache/pdm,sharing=locked \
    PDM_PYPI_URL=http://127.0.0.1:8503/simple/ PDM_PYPI_VERIFY_SSL=false \
    pdm install --check --prod --no-editable
