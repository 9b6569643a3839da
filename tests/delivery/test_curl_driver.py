"""libcurl's multi handle on an asyncio loop (willowe_tasks/providers/_curl.py),
against the fake APNs: HTTP/2 answers come back to the right caller, a
request given up on lets go of its handle, and failures say whether the
request may have left."""

from __future__ import annotations

import asyncio
import socket

import pytest

from willowe_tasks.providers._curl import CurlDriver, CurlFailed, TlsFiles
from willowe_tasks.testing import FakeAPNs

TOKEN = "ab" * 32

#: Longer than any bound below: the fake answers after this.
SLOW_S = 2.0


def _driver(fake: FakeAPNs, *, total_timeout_s: float = 5.0) -> CurlDriver:
    return CurlDriver(TlsFiles(fake.ca_file), connect_timeout_s=5.0, stall_timeout_s=5.0,
                      total_timeout_s=total_timeout_s)


def _post_once(fake: FakeAPNs, url: str, *, total_timeout_s: float = 5.0) -> None:
    async def run() -> None:
        driver = _driver(fake, total_timeout_s=total_timeout_s)
        try:
            await driver.post(url, {}, b"{}")
        finally:
            driver.close()

    asyncio.run(run())


def test_concurrent_posts_each_get_their_own_answer_over_one_connection(
        fake_apns: FakeAPNs) -> None:
    async def run() -> list[tuple[int, str]]:
        driver = _driver(fake_apns)
        try:
            # No provider token: the fake answers each with its own 403 reason.
            answers = await asyncio.gather(*(
                driver.post(f"{fake_apns.url}/3/device/{TOKEN}", {"apns-topic": f"t{i}"},
                            b"{}") for i in range(20)))
            return [(a.status_code, a.headers.get("apns-id", "")) for a in answers]
        finally:
            driver.close()

    answers = asyncio.run(run())
    assert [status for status, _ in answers] == [403] * 20
    assert len({apns_id for _, apns_id in answers}) == 20  # each stream its own answer
    assert len(fake_apns.connections()) == 1


def test_a_post_given_up_on_frees_its_handle_for_the_next(fake_apns: FakeAPNs) -> None:
    async def run() -> int:
        driver = _driver(fake_apns)
        try:
            fake_apns.latency_s = SLOW_S
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    driver.post(f"{fake_apns.url}/3/device/{TOKEN}", {}, b"{}"), 0.2)
            fake_apns.latency_s = 0.0
            answer = await driver.post(f"{fake_apns.url}/3/device/{TOKEN}", {}, b"{}")
            assert not driver._transfers  # nothing left in libcurl's hands
            return answer.status_code
        finally:
            driver.close()

    assert asyncio.run(run()) == 403


def test_a_late_answer_is_a_timeout_that_may_have_been_sent(fake_apns: FakeAPNs) -> None:
    fake_apns.latency_s = SLOW_S
    with pytest.raises(CurlFailed) as caught:
        _post_once(fake_apns, f"{fake_apns.url}/3/device/{TOKEN}", total_timeout_s=0.3)
    assert caught.value.timed_out and caught.value.maybe_sent


def test_nobody_listening_is_a_failure_that_never_left(fake_apns: FakeAPNs) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CurlFailed) as caught:
        _post_once(fake_apns, f"https://127.0.0.1:{port}/3/device/{TOKEN}")
    assert not caught.value.timed_out and not caught.value.maybe_sent


def test_proxy_variables_of_the_environment_are_not_followed(
        fake_apns: FakeAPNs, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int) -> None:
    # Given proxy variables naming a port nobody listens on (libcurl follows
    # them by default; pushes go to the providers directly, as before)
    nowhere = f"http://127.0.0.1:{unused_tcp_port}"
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)

    async def run() -> int:
        driver = _driver(fake_apns)
        try:
            answer = await driver.post(f"{fake_apns.url}/3/device/{TOKEN}", {}, b"{}")
            return answer.status_code
        finally:
            driver.close()

    # When a push is posted, then the fake answers it (403: no provider token)
    assert asyncio.run(run()) == 403
