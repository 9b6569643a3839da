# The worker image used by compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY willowe_tasks ./willowe_tasks
RUN pip install --no-cache-dir .
USER nobody
CMD ["dramatiq", "willowe_tasks"]
