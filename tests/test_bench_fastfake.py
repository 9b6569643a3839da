"""The push bench's Go fakes (bench/fastfake): the worker's own clients get
through, and a push that breaks the providers' rules is refused and recorded
as refused. Skipped where ``go`` is missing (the bench falls back then)."""

from __future__ import annotations

import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from willowe_tasks.providers import PermanentDeliveryError
from willowe_tasks.providers.apns.auth import TokenAuth
from willowe_tasks.providers.apns.client import APNsClient
from willowe_tasks.providers.fcm.client import FCMClient
from willowe_tasks.providers.push import Push

# bench/ is a top-level folder run with ``python -m bench``, not an installed
# package: make it importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fastfake import FastFakes, Received  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")

#: Longest a test waits for the fakes to record what they answered, seconds
#: (they flush their record every 10 ms).
RECORD_WAIT_S = 5.0

#: Poll interval while waiting for the record, seconds.
RECORD_POLL_S = 0.02

APNS_TOKEN = "ab" * 32
FCM_TOKEN = "bench-fcm-u1"


def _push(token: str, notification_id: str) -> Push:
    return Push(token=token, title="It's a match!", body="You and Alex liked each other",
                data={"kind": "match", "notification_id": notification_id}, priority="high",
                expires_at=time.time() + 3600, collapse_id=notification_id)


def _http2(ca_file: str) -> httpx.Client:
    return httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca_file),
                        trust_env=False)


def _recorded(fakes: FastFakes, count: int) -> list[Received]:
    deadline = time.monotonic() + RECORD_WAIT_S
    while len(received := fakes.received()) < count and time.monotonic() < deadline:
        time.sleep(RECORD_POLL_S)
    return received


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastFakes]:
    log: Path = tmp_path_factory.mktemp("fastfake") / "fakes.log"
    with FastFakes(latency_s=0.0, log=log) as started:
        yield started


def test_the_workers_clients_push_through_the_go_fakes(fakes: FastFakes) -> None:
    before = len(fakes.received())
    apns = fakes.apns
    # Given the worker's own clients, configured as fake_provider_env does
    with APNsClient(endpoint=apns.url, default_topic=apns.bundle_id, ca_file=apns.ca_file,
                    auth=TokenAuth(key_path=apns.signing_key_path, key_id=apns.key_id,
                                   team_id=apns.team_id)) as ios, \
            FCMClient(project_id=fakes.fcm.project_id, endpoint=fakes.fcm.url,
                      ca_file=fakes.fcm.ca_file,
                      service_account_info=fakes.fcm.service_account) as android:
        # When each pushes (FCM after its OAuth grant at the fake's token_uri)
        ios.send(_push(APNS_TOKEN, "n-ios"))
        android.send(_push(FCM_TOKEN, "n-android"))
    # Then both were accepted and recorded with the notification and the token
    recorded = {(r.provider, r.notification_id, r.token, r.ok)
                for r in _recorded(fakes, before + 2)[before:]}
    assert recorded == {("apns", "n-ios", APNS_TOKEN, True),
                        ("fcm", "n-android", FCM_TOKEN, True)}


def test_a_push_without_a_provider_token_is_refused_and_recorded(fakes: FastFakes) -> None:
    before = len(fakes.received())
    # Given an HTTP/2 client that sends no authorization header
    with _http2(fakes.apns.ca_file) as client:
        answer = client.post(f"{fakes.apns.url}/3/device/{APNS_TOKEN}",
                             headers={"apns-topic": fakes.apns.bundle_id,
                                      "apns-push-type": "alert"},
                             content=b'{"aps": {"alert": "hi"}, "notification_id": "n-bare"}')
    # Then APNs' answer for it, and the push is recorded as refused
    assert answer.status_code == 403
    assert answer.json() == {"reason": "MissingProviderToken"}
    assert answer.headers["apns-id"]
    [record] = _recorded(fakes, before + 1)[before:]
    assert (record.provider, record.status, record.ok) == ("apns", 403, False)


def test_an_apns_payload_over_4096_bytes_is_too_large(fakes: FastFakes) -> None:
    before = len(fakes.received())
    auth = TokenAuth(key_path=fakes.apns.signing_key_path, key_id=fakes.apns.key_id,
                     team_id=fakes.apns.team_id)
    body = b'{"aps": {"alert": "' + b"x" * 4100 + b'"}}'
    # Given a push over Apple's 4096 bytes, sent past the client's own check
    with _http2(fakes.apns.ca_file) as client:
        answer = client.post(f"{fakes.apns.url}/3/device/{APNS_TOKEN}", content=body,
                             headers={"apns-topic": fakes.apns.bundle_id,
                                      "apns-push-type": "alert",
                                      "authorization": f"bearer {auth.token()}"})
    # Then the fake answers as APNs does
    assert (answer.status_code, answer.json()) == (413, {"reason": "PayloadTooLarge"})
    assert [r.status for r in _recorded(fakes, before + 1)[before:]] == [413]


def test_fcm_without_an_access_token_is_unauthenticated(fakes: FastFakes) -> None:
    before = len(fakes.received())
    with _http2(fakes.fcm.ca_file) as client:
        answer = client.post(
            f"{fakes.fcm.url}/v1/projects/{fakes.fcm.project_id}/messages:send",
            json={"message": {"token": FCM_TOKEN, "data": {"notification_id": "n-x"}}},
            headers={"authorization": "Bearer ya29.made-up"})
    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"
    [record] = _recorded(fakes, before + 1)[before:]
    assert (record.provider, record.status) == ("fcm", 401)


def test_a_push_under_another_apps_topic_is_disallowed(fakes: FastFakes) -> None:
    # Given a client configured with another app's bundle id, the push is refused
    with APNsClient(endpoint=fakes.apns.url, default_topic="com.other.app",
                    ca_file=fakes.apns.ca_file,
                    auth=TokenAuth(key_path=fakes.apns.signing_key_path,
                                   key_id=fakes.apns.key_id,
                                   team_id=fakes.apns.team_id)) as ios, \
            pytest.raises(PermanentDeliveryError, match="TopicDisallowed"):
        ios.send(_push(APNS_TOKEN, "n-other"))
