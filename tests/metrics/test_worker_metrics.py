"""Each worker metric on the real Kafka: make a known state, read it from a
scrape of the workers' endpoint, as Prometheus would."""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import SkipMessage
from kafka import KafkaProducer
from metrics_support import MeteredRig, promtool_check_metrics, scrape_until, series, total

from willowe_tasks.app import App
from willowe_tasks.settings import SettingsError, load_settings, settings_from
from willowe_tasks.worker_metrics import WorkerMetrics

HIGH = "high-priority-notifications"
LOW = "low-priority-notifications"
IOS_TOKEN = "ab" * 32
ANDROID_TOKEN = "android-registration-token-1"
MATCH = {"name": "Анна", "age": 25}


def register_ios(rig: MeteredRig, user_id: str = "user123") -> None:
    rig.app.services().registry.register(user_id, "ios", IOS_TOKEN, rig.apns.bundle_id)


def pushes(text: str, provider: str, outcome: str, reason: str = "") -> float:
    return total(text, "willowe_pushes_total", provider=provider, outcome=outcome,
                 reason=reason)


def messages(text: str, outcome: str, actor: str = "send_match", topic: str = HIGH) -> float:
    return total(text, "willowe_messages_total", topic=topic, actor=actor, outcome=outcome)


def test_a_delivered_match_counts_its_message_its_pushes_and_their_latency(
        metered: MeteredRig) -> None:
    # Given a user with an iPhone and an Android phone
    register_ios(metered)
    metered.app.services().registry.register("user123", "android", ANDROID_TOKEN, "com.w.a")
    # When a match is sent and delivered
    metered.app.actors.send_match.send("user123", MATCH)
    metered.join(HIGH)

    # Then one message was processed, each provider accepted one push, and
    # the latency histograms saw them
    def check(text: str) -> None:
        assert messages(text, "processed") == 1
        assert pushes(text, "apns", "accepted") == 1
        assert pushes(text, "fcm", "accepted") == 1
        assert total(text, "willowe_send_to_accepted_seconds_count", priority="high") == 2
        assert 0 < total(text, "willowe_send_to_accepted_seconds_sum", priority="high") < 120
        assert total(text, "willowe_push_round_trip_seconds_count", provider="apns") == 1
        assert total(text, "willowe_push_round_trip_seconds_count", provider="fcm") == 1
        assert total(text, "willowe_processing_seconds_count", actor="send_match") == 1
        # (The send happened in this process too: the app counts its producer.)
        assert total(text, "willowe_producer_sends_total", outcome="ok") >= 1
        assert total(text, "willowe_producer_sends_total", outcome="failed") == 0

    text = scrape_until(metered.url, check)
    [started] = series(text, "willowe_worker_start_time_seconds")
    assert started.labels["pid"] == str(os.getpid())
    # And Prometheus' own linter accepts the exposition
    checked = promtool_check_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_provider_error_counts_a_retry_later_push_and_a_retried_message(
        metered: MeteredRig) -> None:
    register_ios(metered)
    metered.apns.fail(500, "InternalServerError")
    metered.app.actors.send_match.send("user123", MATCH)
    metered.join(HIGH)

    def check(text: str) -> None:
        assert pushes(text, "apns", "retry_later", "InternalServerError") == 1
        assert pushes(text, "apns", "accepted") == 1
        assert messages(text, "retried") == 1
        assert messages(text, "processed") == 1
        # Both runs were timed, the failed one too.
        assert total(text, "willowe_processing_seconds_count", actor="send_match") == 2

    scrape_until(metered.url, check)


def test_an_apns_outage_counts_the_breaker_opening_and_the_deferred_notifications(
        metered: MeteredRig) -> None:
    # Given an iPhone, and APNs answering 503 to every push
    register_ios(metered)
    metered.apns.fail(503, "ServiceUnavailable", times=10_000)
    breaker = "willowe_provider_breaker_open"
    # When matches keep coming: the first ones' failures open the breaker
    # (five outage answers in a row), the later ones wait without retrying
    for _ in range(8):
        metered.app.actors.send_match.send("user123", MATCH)

    # Then a scrape shows APNs' breaker open, and notifications deferred for it
    def open_and_deferring(text: str) -> None:
        assert total(text, "willowe_provider_breaker_changes_total", provider="apns",
                     state="open") >= 1
        assert total(text, breaker, provider="apns") == 1
        assert total(text, "willowe_notifications_deferred_total", provider="apns",
                     reason="provider_down") >= 1
        assert total(text, "willowe_messages_total", outcome="dead_lettered") == 0

    scrape_until(metered.url, open_and_deferring)

    # And once APNs answers again, a probe closes it: the gauge goes back to 0
    metered.apns.heal()

    def closed(text: str) -> None:
        assert total(text, "willowe_provider_breaker_changes_total", provider="apns",
                     state="closed") >= 1
        assert total(text, breaker, provider="apns") == 0
        assert pushes(text, "apns", "accepted") >= 1

    scrape_until(metered.url, closed)
    metered.join(HIGH)


def test_a_refused_push_and_an_undecodable_record_count_as_dead_letters(
        metered: MeteredRig) -> None:
    # Given a provider that refuses the push for good, and a record that is not a message
    register_ios(metered)
    metered.apns.fail(400, "TopicDisallowed")
    metered.app.actors.send_match.send("user123", MATCH)
    producer = KafkaProducer(bootstrap_servers=metered.app.broker.bootstrap_servers)
    producer.send(HIGH, b"not a dramatiq message").get(timeout=30)
    producer.close()
    metered.join(HIGH)

    def check(text: str) -> None:
        assert pushes(text, "apns", "refused", "TopicDisallowed") == 1
        assert messages(text, "dead_lettered") == 1
        assert messages(text, "dead_lettered", actor="") == 1  # no actor header
        assert total(text, "willowe_dead_letters_total", topic=HIGH, reason="failed") == 1
        assert total(text, "willowe_dead_letters_total", topic=HIGH, reason="undecodable") == 1
        assert messages(text, "processed") == 0

    scrape_until(metered.url, check)


def test_a_rejected_token_counts_its_removal_and_the_guards_verdict(
        metered: MeteredRig) -> None:
    # Given an iPhone whose app was deleted
    register_ios(metered)
    # (A second on: APNs stamps in milliseconds, and a 410 stamped in the
    # registration's own millisecond could read as older and keep the token.)
    metered.apns.unregister(IOS_TOKEN, at=time.time() + 1)
    # When a match is sent to it, on a worker that has pushed too little to judge
    metered.app.actors.send_match.send("user123", MATCH)
    metered.join(HIGH)

    # Then the token was removed, with the guard's early verdict, and the
    # notification looked at again once (no device left: processed)
    def check(text: str) -> None:
        assert pushes(text, "apns", "token_removed", "Unregistered") == 1
        assert total(text, "willowe_token_guard_verdicts_total", provider="apns",
                     reason="Unregistered", verdict="remove_and_recheck") == 1
        assert messages(text, "retried") == 1
        assert messages(text, "processed") == 1

    scrape_until(metered.url, check)


def test_a_notification_past_its_deadline_counts_as_expired_dropped(metered: MeteredRig) -> None:
    # Given a fast match (15 minutes to live) sent 20 minutes ago
    register_ios(metered)
    actor = metered.app.actors.send_fast_match
    message = actor.message_with_options(args=("user123", MATCH))
    old = message.copy(message_timestamp=int((time.time() - 20 * 60) * 1000))
    metered.app.broker.enqueue(old)
    metered.join(HIGH)

    def check(text: str) -> None:
        assert messages(text, "expired_dropped", "send_fast_match") == 1
        assert messages(text, "processed", "send_fast_match") == 0

    scrape_until(metered.url, check)
    assert metered.apns.received == []


class SkipAnalytics(dramatiq.Middleware):
    """Skips every analytics event (a stand-in for any middleware that skips)."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if message.actor_name == "track_event":
            raise SkipMessage()


def test_a_message_a_middleware_skips_counts_as_skipped(metered: MeteredRig) -> None:
    metered.app.broker.add_middleware(SkipAnalytics())
    metered.app.actors.track_event.send("user_login", {"userId": "u1"})
    metered.join(LOW)

    def check(text: str) -> None:
        assert messages(text, "skipped", "track_event", LOW) == 1
        assert messages(text, "processed", "track_event", LOW) == 0

    scrape_until(metered.url, check)


def test_metrics_can_be_switched_off(kafka_bootstrap: str) -> None:
    app = App(settings_from({"KAFKA_BROKER": kafka_bootstrap, "METRICS_ENABLED": "false"}))
    try:
        assert not [m for m in app.broker.middleware if isinstance(m, WorkerMetrics)]
        assert app.broker.events is None  # the broker reports to nobody
    finally:
        app.close()


@pytest.mark.parametrize(("variable", "value"), [("METRICS_PORT", "70000"),
                                                 ("METRICS_EXPORTER_PORT", "0"),
                                                 ("METRICS_ENABLED", "perhaps")])
def test_a_bad_metrics_setting_is_an_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(**{variable.lower(): value})
