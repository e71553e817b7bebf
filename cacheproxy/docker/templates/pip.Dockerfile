@reach
# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
@{copy}RUN --mount=@pip_mount \
    @pip_env \
    pip install @args
