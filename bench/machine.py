"""Facts about the machine and software a run measured, stored with its
figures: numbers from a 2-core shared box and a 32-core server differ."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.envs import ROOT, package_versions
from bench.systems import System

#: Where the project's local Kafka keeps its jars (their names carry the version).
KAFKA_LIBS = ROOT / ".cache" / "kafka" / "libs"

#: Packages whose versions matter for each system's figures.
PACKAGES = ("dramatiq", "kafka-python", "dramatiq-kafka", "redis", "celery", "kombu",
            "confluent-kafka")


def facts(bootstrap: str, systems: list[System], redis_version: str | None) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_mem_total_kib() / 1024 / 1024, 1),
        "load_average_at_start": list(os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "kafka": {"bootstrap": bootstrap, "api_version": _kafka_api_version(bootstrap),
                  "local_jars": _kafka_jar_version()},
        "java": _java_version(),
        "redis_server": redis_version,
        "commit": _git("rev-parse", "HEAD"),
        # The broker changes often: say whether the measured code was committed.
        "broker_uncommitted_changes": bool(_git("status", "--porcelain", "--", "broker")),
        "packages": {s.key: package_versions(s.python(), list(PACKAGES)) for s in systems},
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _kafka_api_version(bootstrap: str) -> str | None:
    """The API version the broker answers with (kafka-python's probe)."""
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-facts")
        try:
            version = admin._client.check_version()
        finally:
            admin.close()
        return ".".join(str(p) for p in version) if version else None
    except Exception:  # facts are best effort: a missing one must not stop the run
        return None


def _kafka_jar_version() -> str | None:
    for jar in sorted(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        match = re.search(r"kafka_2\.13-(.+)\.jar$", jar.name)
        if match:
            return match.group(1)
    return None


def _java_version() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else None
