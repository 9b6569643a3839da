"""What a fake recorded: the push's custom data, read the same way for both providers."""

from __future__ import annotations

from typing import Any

from willowe_tasks.testing import ReceivedRequest


def received(body: Any) -> ReceivedRequest:
    return ReceivedRequest(token="t", method="POST", path="/", headers={}, json=body,
                           received_at=0.0, connection="127.0.0.1:1", http_version="2",
                           status=200, reason=None)


def test_an_apns_payloads_data_is_its_keys_beside_aps() -> None:
    push = received({"aps": {"alert": {"title": "Hi"}}, "notification_id": "n1", "kind": "like"})
    assert push.data == {"notification_id": "n1", "kind": "like"}


def test_an_fcm_messages_data_is_its_data_field() -> None:
    push = received({"message": {"token": "t", "notification": {"title": "Hi"},
                                 "data": {"notification_id": "n2"}}})
    assert push.data == {"notification_id": "n2"}


def test_a_body_that_was_not_json_or_carries_no_data_has_none() -> None:
    assert received(None).data == {}
    assert received({"message": {"token": "t"}}).data == {}
