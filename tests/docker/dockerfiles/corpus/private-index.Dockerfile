# A build with its own indexes, and installers the rewrite leaves alone.
FROM python:3.12-slim AS base
ARG PIP_INDEX_URL
ENV PIP_TRUSTED_HOST=packages.internal.example
RUN pip install -r requirements.txt

FROM python:3.12-slim AS uvstage
ENV UV_EXTRA_INDEX_URL=https://private.example/simple/ UV_NO_PROGRESS=1
RUN uv pip install --system private-pkg
RUN uv pip install --system --extra-index-url https://other.example/simple/ other-pkg

FROM base
ENV UV_DEFAULT_INDEX=https://private.example/simple/
RUN pip install app-deps
RUN uv pip install --system private-pkg
RUN pip download -d /wheels six && pip wheel -w /wheels ./src
RUN pipx install black
RUN poetry install --no-root
RUN pdm sync --prod
