FROM python:3.12-slim
WORKDIR /app
# Already cached by hand: keep that mount, add only the proxy settings.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=requirements.txt,target=requirements.txt \
    pip install -r requirements.txt
RUN --mount=type=secret,id=netrc,target=/root/.netrc pip install private-pkg
RUN --mount=type=cache,id=apt,target=/var/cache/apt,sharing=locked apt-get update
RUN --mount=type=cache,dst=/root/.cache/uv/ uv pip install --system httpx
