"""The dashboard in a real browser (Debian's Chromium, headless, driven by
Playwright): it shows the lag and the dead letters a test made, a replay
clicked on the page moves them, and the lag then falls to zero."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dashboard_support import CHROMIUM, CHROMIUM_FLAGS, ContractMetrics, serve
from ops_support import HIGH, OpsRig, audit_lines, ios_token, pushes_by_notification
from playwright.sync_api import Page, expect, sync_playwright

from willowe_tasks.ops.dashboard import create_app
from willowe_tasks.settings import load_settings

TOKEN = "operator-token-for-the-browser-test"

#: Longest wait for the page to show something, ms (it reloads every second).
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
                    " (as .ci/run does)")
    with sync_playwright() as playwright:
        # A fresh profile each time; the Chromium Debian ships, never a download.
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()


def test_the_page_shows_lag_and_dead_letters_and_a_replay_clicked_there_moves_them(
    rig: OpsRig, page: Page, tmp_path: Path, free_ports: Callable[[int], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given three matches that ran out of retries while APNs failed...
    rig.worker()
    dead_ids, _ = rig.retry_exhausted(3)
    rig.stop_worker()
    rig.apns.clear()
    # ...and five more waiting while no worker runs
    waiting_users = [f"waiting-{n}" for n in range(5)]
    for user in waiting_users:
        rig.register_ios(user, ios_token(user))
    waiting_ids = rig.send_matches(waiting_users)
    # and the workers' metrics, as the metrics contract names them
    metrics_port, dashboard_port = free_ports(2)
    metrics = ContractMetrics(metrics_port)
    monkeypatch.setenv("DASHBOARD_METRICS_URL", metrics.url)
    monkeypatch.setenv("DASHBOARD_SCRAPE_INTERVAL_S", "1")
    monkeypatch.setenv("DASHBOARD_OPERATOR_TOKEN", TOKEN)
    try:
        with serve(create_app(load_settings()), dashboard_port) as url:
            # When an operator opens the dashboard
            page.goto(url)
            high = page.locator('#lag tr[data-priority="high"]')
            # Then it shows the lag in messages and in seconds
            expect(high.locator(".lag-messages")).to_have_text("5", timeout=PAGE_TIMEOUT_MS)
            assert float(high.locator(".lag-seconds").inner_text()) > 0
            # no worker consuming
            expect(page.locator("#member-count")).to_have_attribute("data-count", "0")
            # and the dead letters, by cause
            group = page.locator('tr.dead-letter-group[data-cause="failed: Retry"]')
            expect(group.locator(".waiting")).to_have_text("3")
            # and, once the workers' metrics have moved, throughput and latency
            metrics.messages.labels(HIGH, "send_match", "processed").inc(40)
            metrics.messages.labels(HIGH, "send_match", "retried").inc(10)
            for _ in range(40):
                metrics.latency.labels("high").observe(0.02)
            rates = page.locator('#throughput tr[data-rates="high"]')
            expect(rates.locator(".error-rate")).to_have_text("20.0 %", timeout=PAGE_TIMEOUT_MS)
            # 40 latencies between 10 and 25 ms: interpolated as Prometheus does
            expect(rates.locator(".p50")).to_have_text("18 ms")
            expect(rates.locator(".p99")).to_have_text("25 ms")
            assert float(rates.locator(".throughput").inner_text()) > 0
            before = tmp_path / "dashboard-before-replay.png"
            page.screenshot(path=str(before), full_page=True)

            # When the operator clicks replay for that cause
            group.locator("a.replay").click()
            # Then the dry run's count comes first
            expect(page.locator("#to-replay")).to_have_text("3")
            page.fill('input[name="token"]', TOKEN)
            page.click("#confirm-replay")
            # and the replay moves them back to their topic
            expect(page.locator("tr.job").first).to_have_attribute(
                "data-state", "finished", timeout=PAGE_TIMEOUT_MS)
            group = page.locator('tr.dead-letter-group[data-cause="failed: Retry"]')
            expect(group.locator(".waiting")).to_have_text("0", timeout=PAGE_TIMEOUT_MS)
            expect(group.locator(".replayed")).to_have_text("3")
            expect(high.locator(".lag-messages")).to_have_text("8", timeout=PAGE_TIMEOUT_MS)

            # When a worker runs again (APNs is healthy now)
            rig.worker()
            # Then the lag falls to nothing
            expect(high.locator(".lag-messages")).to_have_text("0", timeout=PAGE_TIMEOUT_MS)
            expect(page.locator("#member-count")).not_to_have_attribute("data-count", "0")
            after = tmp_path / "dashboard-after-replay.png"
            page.screenshot(path=str(after), full_page=True)
            html = page.content()
    finally:
        metrics.close()
    print(f"\nscreenshots: {before} {after}")
    # Every phone got its match once: the three replayed and the five waiting
    rig.join()
    assert pushes_by_notification(rig.apns) == dict.fromkeys(dead_ids + waiting_ids, 1)
    # The page never showed a device token
    for user in waiting_users + [f"user-{n}" for n in range(3)]:
        assert ios_token(user) not in html
    # The replay was audited as the dashboard's
    [line] = [a for a in audit_lines(rig) if a["action"] == "dlq replay"]
    assert line["via"] == "dashboard" and line["counts"]["replayed"] == 3
    # The screenshots stay in the test's folder (pytest keeps the last runs')
    assert before.stat().st_size > 10_000 and after.stat().st_size > 10_000
