FROM python:3.12-slim
COPY --from=uvbin /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1
WORKDIR /app
RUN --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-install-project --no-dev
COPY . /app
RUN uv sync --frozen --no-dev
RUN uv --directory /app sync
RUN uv pip sync --system requirements.lock && uv pip install --no-cache --system -e .
