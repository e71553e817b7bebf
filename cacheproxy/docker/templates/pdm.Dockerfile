@reach
# pdm: PDM_PYPI_URL points pdm's default source at the proxy for this step only (inline,
# not ENV, which would stay in the image); PDM_PYPI_VERIFY_SSL=false is how pdm trusts a
# plain-http index on a non-loopback host. pdm must already be in the image. A pdm.lock made
# with --static-urls installs from the recorded URLs and bypasses the proxy.
COPY pyproject.toml pdm.lock ./
RUN --mount=@pdm_mount \
    @pdm_env \
    pdm install --check --prod --no-editable
