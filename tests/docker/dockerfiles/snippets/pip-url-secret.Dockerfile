# cacheproxy: RUN steps reach the proxy at
#   https://pypi-cache.example.com/simple/
# The build must resolve and reach pypi-cache.example.com by itself (no extra docker build flags).
# BuildKit is needed for RUN --mount (Docker 20.10: DOCKER_BUILDKIT=1). Credentials never go
# in this URL (they would be in `docker history`): use a secret mount for an index needing them.
# The index needs a user: the credentials come from the BuildKit secret 'cacheproxy-netrc',
# a netrc file, mounted for this step only (never in a layer or `docker history`):
#   ~/.cacheproxy-netrc (chmod 600): machine pypi-cache.example.com login USER password PASSWORD
#   docker build --secret id=cacheproxy-netrc,src=$HOME/.cacheproxy-netrc ...

# pip: the index is given to this step only (inline, not ENV, which would stay in the image).
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback unless it is
# trusted, and caches downloads (in the mount) only from https or trusted hosts.
# No --no-cache-dir: it defeats the cache mount. Debian/Ubuntu's system python refuses pip
# installs (PEP 668): install into a venv (python3 -m venv /venv; ENV PATH=/venv/bin:$PATH).
COPY requirements.txt ./requirements.txt
RUN --mount=type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared --mount=type=secret,id=cacheproxy-netrc,required=true \
    NETRC=/run/secrets/cacheproxy-netrc PIP_INDEX_URL=https://pypi-cache.example.com/simple/ \
    pip install -r requirements.txt
