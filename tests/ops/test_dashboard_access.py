"""Who may do what on the dashboard: read-only without a token, replay and
purge only with the right one (each attempt audited), bad requests refused,
and no device token on any page. Over HTTP, on the real Kafka."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from dashboard_support import serve
from ops_support import (
    HIGH,
    OpsRig,
    audit_lines,
    dead_letter_count,
    dead_letters_carrying_a_token,
    end_offsets,
    ios_token,
)

from willowe_tasks.ops.dashboard import create_app
from willowe_tasks.settings import load_settings

TOKEN = "an-operator-token-of-some-length"
REPLAY = {"topic": HIGH, "cause": "failed: Retry"}


def test_without_a_token_configured_the_dashboard_only_reads(
    rig: OpsRig, free_ports: Callable[[int], list[int]]
) -> None:
    rig.worker()
    rig.retry_exhausted(2)
    before = end_offsets(rig, HIGH)
    with serve(create_app(load_settings()), free_ports(1)[0]) as url:
        page = httpx.get(url + "/")
        assert page.status_code == 200
        assert "read-only" in page.text
        preview = httpx.get(url + "/replay", params=REPLAY)
        assert 'id="to-replay">2<' in preview.text
        assert "<form" not in preview.text
        refused = httpx.post(url + "/replay", data={**REPLAY, "token": TOKEN})
        assert refused.status_code == 403
        assert httpx.post(url + "/purge", data={"topic": HIGH, "before": "1m",
                                                "token": TOKEN}).status_code == 403
    assert end_offsets(rig, HIGH) == before
    assert dead_letter_count(rig) == 2


def test_a_wrong_token_changes_nothing_and_is_audited(
    rig: OpsRig, free_ports: Callable[[int], list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR_TOKEN", TOKEN)
    rig.worker()
    rig.retry_exhausted(2)
    before = end_offsets(rig, HIGH)
    with serve(create_app(load_settings()), free_ports(1)[0]) as url:
        wrong = httpx.post(url + "/replay", data={**REPLAY, "token": TOKEN[:-1] + "x"})
        assert wrong.status_code == 403 and "nothing was done" in wrong.text
        missing = httpx.post(url + "/purge", data={"topic": HIGH, "before": "1m"})
        assert missing.status_code == 403
        bad = httpx.get(url + "/replay", params={"topic": "everything", "cause": "x"})
        assert bad.status_code == 400
        bad = httpx.post(url + "/purge", data={"topic": HIGH, "before": "soon",
                                               "token": TOKEN})
        assert bad.status_code == 400
    assert end_offsets(rig, HIGH) == before
    assert dead_letter_count(rig) == 2
    assert [(a["action"], a["via"], a["result"]) for a in audit_lines(rig)] == [
        ("dlq replay", "dashboard", "refused: wrong operator token"),
        ("dlq purge", "dashboard", "refused: wrong operator token")]
    assert TOKEN not in rig.audit_path.read_text()


def test_purge_with_the_token_deletes_and_says_how_many(
    rig: OpsRig, free_ports: Callable[[int], list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR_TOKEN", TOKEN)
    rig.raw(HIGH, b"junk")
    rig.worker()
    rig.join()
    with serve(create_app(load_settings()), free_ports(1)[0]) as url:
        preview = httpx.get(url + "/purge", params={"topic": "high", "before": "-1h"})
        assert preview.status_code == 400  # not a time
        preview = httpx.get(url + "/purge", params={"topic": "high", "before": "2999-01-01"})
        assert 'id="purge-count">1<' in preview.text
        done = httpx.post(url + "/purge", data={"topic": "high", "before": "2999-01-01",
                                                "token": TOKEN})
        assert done.status_code == 200 and "Deleted 1 dead letter" in done.text
    assert dead_letter_count(rig) == 0
    [line] = audit_lines(rig)
    assert line["action"] == "dlq purge" and line["counts"]["deleted"] == 1


def test_no_page_shows_a_device_token(
    rig: OpsRig, free_ports: Callable[[int], list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR_TOKEN", TOKEN)
    token = ios_token("private-phone")
    dead_letters_carrying_a_token(rig, token)
    with serve(create_app(load_settings()), free_ports(1)[0]) as url:
        pages = [httpx.get(url + "/").text, httpx.get(url + "/status.json").text]
        for cause in ("failed: DeviceValidationError", "failed: NotificationFailed"):
            pages.append(httpx.get(url + "/replay", params={"topic": HIGH,
                                                            "cause": cause}).text)
    assert "NotificationFailed" in pages[0] and "DeviceValidationError" in pages[0]
    for text in pages:
        assert token not in text and token[:32] not in text
