# cacheproxy: RUN steps reach the proxy as "pypi-cache", which Docker maps to the host
# ("host-gateway"). One name on every machine keeps the layer cache valid across hosts.
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1):
#   DOCKER_BUILDKIT=1 docker build --add-host pypi-cache:host-gateway .
#   docker buildx build --add-host pypi-cache:host-gateway .
# host-gateway fails in some docker build releases (Docker 23.0.0, 25.0.0, buildx with the
# docker-container driver): then pass the bridge gateway IP, --add-host pypi-cache:172.17.0.1
# (`cacheproxy dockerfile --reach gateway-ip` asks the engine for it).
# On Linux the proxy must listen on the bridge address (or 0.0.0.0), not only on 127.0.0.1.

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
    export PIP_INDEX_URL=http://pypi-cache:8503/simple/ PIP_TRUSTED_HOST=pypi-cache \
 && python3 -m venv /tmp/poetry \
 && /tmp/poetry/bin/pip install poetry poetry-plugin-export \
 && /tmp/poetry/bin/poetry export --format requirements.txt --output /tmp/requirements.txt \
 && rm -rf /tmp/poetry \
 && sed -E -i '\#^[[:space:]]*(-i|--index-url|--extra-index-url|--trusted-host)([[:space:]]+|=)([a-z+]+://)?(localhost|127\.[0-9.]+|\[::1\])([:/[:space:]]|$)#d' /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
