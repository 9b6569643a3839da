# The worker image used by compose.yaml (workers and the one-shot topics and db jobs).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY willowe_tasks ./willowe_tasks
RUN pip install --no-cache-dir .
# The one place the workers write (the analytics file): a volume mounted here
# starts with this folder's owner, so `nobody` can write it; /app stays read-only.
RUN mkdir -p /var/lib/willowe && chown nobody:nogroup /var/lib/willowe
VOLUME /var/lib/willowe
USER nobody
CMD ["dramatiq", "willowe_tasks"]
