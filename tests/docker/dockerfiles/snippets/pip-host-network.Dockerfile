# cacheproxy: RUN steps share the host's network (--network=host), so the proxy can stay on
# 127.0.0.1. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --network=host .
#   docker buildx build --allow network.host --network=host .
# A docker-container builder also needs the entitlement when it is created:
#   docker buildx create --driver docker-container --buildkitd-flags '--allow-insecure-entitlement network.host'
# The URL differs from the alias form (http://pypi-cache:PORT), so the layer cache is not
# shared with hosts that build the other way.

# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared \
    PIP_INDEX_URL=http://127.0.0.1:8503/simple/ PIP_TRUSTED_HOST=127.0.0.1 \
    pip install -r requirements.txt
