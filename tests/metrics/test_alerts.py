"""The shipped alert rules are valid Prometheus rules, and each fires on the
state it is for (promtool's rule unit tests, tests/metrics/alerts_test.yml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from metrics_support import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")


def test_the_rules_file_passes_promtool_check_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 rules found" in done.stdout


def test_each_alert_fires_on_its_state_and_not_below_it() -> None:
    done = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                          text=True, timeout=120, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
