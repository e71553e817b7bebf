# cacheproxy: RUN steps share the host's network (--network=host), so the proxy can stay on
# 127.0.0.1. BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --network=host .
#   docker buildx build --allow network.host --network=host .
# A docker-container builder also needs the entitlement when it is created:
#   docker buildx create --driver docker-container --buildkitd-flags '--allow-insecure-entitlement network.host'
# The URL differs from the alias form (http://pypi-cache:PORT), so the layer cache is not
# shared with hosts that build the other way.

# poetry: `poetry install` cannot be pointed at another index without editing pyproject.toml
# (python-poetry/poetry#1632), and a `poetry source add` there changes poetry.lock's
# content-hash. So export the lock (hashes included, and checked) and install it with pip
# through the proxy; poetry itself runs from a throw-away venv. The index is given to this
# step only (export in the RUN's shell, not ENV, which would stay in the image);
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback otherwise.
# The export writes the project's sources as --index-url/--extra-index-url/--trusted-host
# lines, and a requirements file's index wins over PIP_INDEX_URL: the sed drops those on
# localhost/127.x/[::1] (a proxy added with `poetry source add` on this machine), which in a
# build is the build container itself. Lines naming other hosts (a private index) are kept.
COPY pyproject.toml poetry.lock ./
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared \
    export PIP_INDEX_URL=http://127.0.0.1:8503/simple/ PIP_TRUSTED_HOST=127.0.0.1 \
 && python3 -m venv /tmp/poetry \
 && /tmp/poetry/bin/pip install poetry poetry-plugin-export \
 && /tmp/poetry/bin/poetry export --format requirements.txt --output /tmp/requirements.txt \
 && rm -rf /tmp/poetry \
 && sed -E -i '\#^[[:space:]]*(-i|--index-url|--extra-index-url|--trusted-host)([[:space:]]+|=)([a-z+]+://)?(localhost|127\.[0-9.]+|\[::1\])([:/[:space:]]|$)#d' /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
