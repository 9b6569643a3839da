"""The operator tools' settings: refused with the variable named, the token never echoed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from willowe_tasks.settings import Settings, SettingsError, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_short_operator_token_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(dashboard_operator_token="hunter2")
    assert "DASHBOARD_OPERATOR_TOKEN" in str(raised.value)
    assert "at least 16 characters" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    # An empty one means none: read-only
    assert load_settings(dashboard_operator_token="").dashboard_operator_token is None
    token = load_settings(dashboard_operator_token="x" * 16).dashboard_operator_token
    assert token is not None and "x" * 16 not in repr(token)


def test_the_metrics_url_must_be_http_and_the_limits_hold() -> None:
    with pytest.raises(SettingsError, match="DASHBOARD_METRICS_URL: expected an http"):
        load_settings(dashboard_metrics_url="worker:9191/metrics")
    assert load_settings(dashboard_metrics_url="").dashboard_metrics_url is None
    with pytest.raises(SettingsError, match="DLQ_MAX_REPLAYS"):
        load_settings(dlq_max_replays=0)
    with pytest.raises(SettingsError, match="DASHBOARD_PORT"):
        load_settings(dashboard_port=70000)


def test_every_operator_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", README.read_text(), re.MULTILINE))
    ours = {name.upper() for name in Settings.model_fields
            if name.startswith(("ops_", "dlq_", "dashboard_"))}
    assert len(ours) == 9
    assert ours <= documented, ours - documented
