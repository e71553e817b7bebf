# cacheproxy: RUN steps reach the proxy at
#   https://pypi-cache.example.com/simple/
# The build must resolve and reach pypi-cache.example.com by itself (no extra docker build flags).
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1). Credentials never go
# in this URL (they would be in `docker history`): use a secret mount for an index needing them.

# pdm: PDM_PYPI_URL points pdm's default source at the proxy for this step only (inline,
# not ENV, which would stay in the image); PDM_PYPI_VERIFY_SSL=false is how pdm trusts a
# plain-http index on a non-loopback host. pdm must already be in the image. A pdm.lock made
# with --static-urls installs from the recorded URLs and bypasses the proxy.
COPY pyproject.toml pdm.lock ./
RUN --mount=type=cache,id=cacheproxy-pdm,target=/root/.cache/pdm,sharing=locked \
    PDM_PYPI_URL=https://pypi-cache.example.com/simple/ \
    pdm install --check --prod --no-editable
