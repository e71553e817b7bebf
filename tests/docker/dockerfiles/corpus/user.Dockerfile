FROM python:3.12-slim AS base
RUN useradd --create-home --uid 1000 app
USER app
WORKDIR /home/app
RUN pip install --user --no-cache-dir requests

FROM base AS numeric
USER 1000:1000
RUN python -m pip install --user flask

FROM base AS back-to-root
USER root
RUN pip install gunicorn
