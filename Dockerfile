FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install ${TORCH_SPEC}
COPY pyproject.toml README.md alembic.ini ./
COPY support_bot ./support_bot
COPY ingest ./ingest
COPY web ./web
COPY migrations ./migrations
COPY examples ./examples
RUN pip install -e .
RUN useradd --create-home --uid 1000 bot && mkdir -p /data && chown bot /data
USER bot
ENV SUPPORT_BOT_DATA_DIR=/data
EXPOSE 8000
# Development mode (SQLite under /data) for trying it out; docker-compose.yml runs production. The first start prints
# the console's one-time admin password and a random admin token for scripts (both also kept under /data, readable by
# the bot user only); the published default admin token is never accepted.
CMD ["support-bot", "serve", "--host", "0.0.0.0"]
