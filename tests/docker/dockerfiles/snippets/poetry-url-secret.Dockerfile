# cacheproxy: RUN steps reach the proxy at
#   https://pypi-cache.example.com/simple/
# The build must resolve and reach pypi-cache.example.com by itself (no extra docker build flags).
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1). Credentials never go
# in this URL (they would be in `docker history`): use a secret mount for an index needing them.
# The index needs a user: the credentials come from the BuildKit secret 'cacheproxy-netrc',
# a netrc file, mounted for this step only (never in a layer or `docker history`):
#   ~/.cacheproxy-netrc (chmod 600): machine pypi-cache.example.com login USER password PASSWORD
#   docker build --secret id=cacheproxy-netrc,src=$HOME/.cacheproxy-netrc ...

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
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared --mount=type=secret,id=cacheproxy-netrc,required=true \
    export NETRC=/run/secrets/cacheproxy-netrc PIP_INDEX_URL=https://pypi-cache.example.com/simple/ \
 && python3 -m venv /tmp/poetry \
 && /tmp/poetry/bin/pip install poetry poetry-plugin-export \
 && /tmp/poetry/bin/poetry export --format requirements.txt --output /tmp/requirements.txt \
 && rm -rf /tmp/poetry \
 && sed -E -i '\#^[[:space:]]*(-i|--index-url|--extra-index-url|--trusted-host)([[:space:]]+|=)([a-z+]+://)?(localhost|127\.[0-9.]+|\[::1\])([:/[:space:]]|$)#d' /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
