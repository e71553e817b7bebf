@reach
# poetry: `poetry install` cannot be pointed at another index without editing pyproject.toml
# (python-poetry/poetry#1632), and a `poetry source add` there changes poetry.lock's
# content-hash. So export the lock (hashes included, and checked) and install it with pip
# through the proxy; poetry itself runs from a throw-away venv. The index is given to this
# step only (export in the RUN's shell, not ENV, which would stay in the image);
# PIP_TRUSTED_HOST: pip ignores a plain-http index on any host but loopback otherwise.
COPY pyproject.toml poetry.lock ./
RUN --mount=@pip_mount \
    export @pip_env \
 && python3 -m venv /tmp/poetry \
 && /tmp/poetry/bin/pip install poetry poetry-plugin-export \
 && /tmp/poetry/bin/poetry export --format requirements.txt --output /tmp/requirements.txt \
 && rm -rf /tmp/poetry \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
