"""The environment that points worker processes (``dramatiq willowe_tasks``)
at local fakes, so a test or demo can run real workers against them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from willowe_tasks.testing.fake_apns import FakeAPNs
from willowe_tasks.testing.fake_fcm import FakeFCM

__all__ = ["fake_provider_env", "worker_command"]


def worker_command(*, processes: int, threads: int) -> list[str]:
    """``dramatiq willowe_tasks`` with this interpreter's Dramatiq (the one
    beside ``sys.executable``, whether or not its venv is on ``PATH``)."""
    dramatiq = Path(sys.executable).with_name("dramatiq")
    return [str(dramatiq), "willowe_tasks", "--processes", str(processes),
            "--threads", str(threads)]


def fake_provider_env(apns: FakeAPNs, fcm: FakeFCM, home: Path, *,
                      own_copies: bool = False) -> dict[str, str]:
    """Settings (as environment variables) for workers that deliver to ``apns``
    and ``fcm`` and keep their registry, ledger, analytics and audit trail
    under ``home``.

    With ``own_copies`` the fakes' CA and signing key are copied into
    ``home`` too, so workers share no file with the fakes' process (a host of
    their own, or a user who can't read the fakes' private folders)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "DEVICE_REGISTRY_PATH": str(home / "devices.sqlite3"),
        "DELIVERY_LOG_PATH": str(home / "delivery-log.sqlite3"),
        "ANALYTICS_PATH": str(home / "analytics.jsonl"),
        "AUDIT_LOG_PATH": str(home / "audit.jsonl"),
        "PUSH_QUOTA_PATH": str(home / "push-quota.sqlite3"),
        "APNS_ENDPOINT": apns.url,
        "APNS_CA_FILE": apns.ca_file,
        "APNS_TOPIC": apns.bundle_id,
        "APNS_KEY_FILE": apns.signing_key_path,
        "APNS_KEY_ID": apns.key_id,
        "APNS_TEAM_ID": apns.team_id,
        "FCM_PROJECT_ID": fcm.project_id,
        "FCM_ENDPOINT": fcm.url,
        "FCM_CA_FILE": fcm.ca_file,
        "FCM_SERVICE_ACCOUNT_FILE": fcm.write_service_account(home / "service-account.json"),
    }
    if own_copies:
        for name in ("APNS_CA_FILE", "APNS_KEY_FILE", "FCM_CA_FILE"):
            # One copy per setting: both fakes call their CA ca.pem.
            copy = home / f"{name.lower()}-{Path(env[name]).name}"
            shutil.copyfile(env[name], copy)
            env[name] = str(copy)
    return env
