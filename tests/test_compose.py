"""compose.yaml parses and agrees with the topic specs and the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from willowe_tasks.settings import Settings
from willowe_tasks.topics import ALL_TOPIC_SPECS

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_it_has_kafka_a_topic_setup_and_workers() -> None:
    services = load()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["topics"]["command"] == ["python", "-m", "willowe_tasks", "topics"]
    assert services["worker"]["command"][:2] == ["dramatiq", "willowe_tasks"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == \
        "service_completed_successfully"


def test_app_services_use_only_known_setting_names() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for service in ("topics", "worker"):
        env = load()["services"][service]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["KAFKA_BROKER"] == "kafka:9092"


def test_defaults_in_compose_match_the_settings_defaults() -> None:
    env = load()["services"]["worker"]["environment"]
    for name, value in env.items():
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
        if default:
            assert default.group(1) == str(Settings.model_fields[name.lower()].default), name


def test_topics_come_from_the_specs_not_from_auto_creation() -> None:
    text = COMPOSE.read_text()
    kafka_env = load()["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Any topic compose names must be one of ours; partition counts are never restated.
    named = set(re.findall(r"[a-z]+-priority-notifications(?:\.[DX]Q)?", text))
    assert named <= {spec.name for spec in ALL_TOPIC_SPECS}
    assert "partitions" not in text
