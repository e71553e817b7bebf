FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*

# Upgrade the installer, then the app's requirements.
RUN python -m pip install --upgrade pip setuptools wheel && \
    pip install \
        # pinned
        --no-cache-dir \
        -r /tmp/requirements.txt

RUN set -eux; \
    pip3 install gunicorn==23.0.0 \
        --no-cache-dir
  RUN    PIP_DEFAULT_TIMEOUT=100 /usr/local/bin/pip install "uvicorn[standard]>=0.30" 'fastapi<1'
RUN if [ -f requirements-dev.txt ]; then pip install -r requirements-dev.txt; fi
EXPOSE 8000
