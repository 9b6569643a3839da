"""The notification worker's world for one push drill: local fakes of APNs
and FCM, settings that point workers at them, users with iOS and Android
phones, notifications on Kafka, and the counts a verdict is made of.

A push counts when a fake accepted it (answered 200); the refusals a fake
was told to answer with are attempts, not pushes. Pushes are keyed by
notification id and the token's ledger key (a sha256), so no token shows
in results or logs.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from kafka import KafkaAdminClient

from bench.drills._common import Context, Result, tally, wait_until
from bench.envs import ROOT
from bench.runner import start
from broker.topics import reconcile
from willowe_tasks.ledger import DeliveryLedger
from willowe_tasks.services import build_ledger, build_registry
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import (
    FakeAPNs,
    FakeFCM,
    ReceivedRequest,
    fake_provider_env,
    worker_command,
)
from willowe_tasks.tokens import token_key
from willowe_tasks.topics import ALL_TOPIC_SPECS

#: Users per drill. Each has an iPhone and an Android phone; every
#: SECOND_IPHONE_EVERY-th one a second iPhone.
USERS = 40
SECOND_IPHONE_EVERY = 4

#: Package name of the Android app (FCM does not check it).
ANDROID_APP = "com.willowe.android"

#: Threads of the worker process, as the brief's production command.
THREADS = 8

#: ``fail()`` takes a count, not a duration: this many is "until recovered".
UNTIL_RECOVERED = 1_000_000

Pair = tuple[str, str]  # (notification id, token key)


@dataclass(frozen=True)
class Host:
    """A worker host of a drill (see :meth:`PushRig.host`)."""

    name: str
    #: Its working directory, holding every file it has.
    folder: Path
    #: Its worker's environment.
    env: dict[str, str]


class PushRig:
    """Use as a context manager; everything it starts stops on exit."""

    def __init__(self, ctx: Context, name: str, *, latency_s: float,
                 settings: dict[str, str]) -> None:
        self.ctx = ctx
        self.name = name
        self.home = ctx.workdir / f"{name}-{secrets.token_hex(3)}"
        self.apns = FakeAPNs(latency_s=latency_s)
        self.fcm = FakeFCM(latency_s=latency_s)
        self._settings = settings
        self.env: dict[str, str] = {}
        #: Token keys of each user's phones.
        self.phones: dict[str, list[str]] = {}
        #: Token keys of the iPhones among them.
        self.iphones: set[str] = set()
        #: Each user's iPhone tokens (for faults aimed at one device).
        self.iphone_tokens: dict[str, list[str]] = {}
        #: The user of each notification sent.
        self.sent: dict[str, str] = {}
        #: When each notification was sent, in unix seconds.
        self.sent_at: dict[str, float] = {}
        #: What the fakes recorded before they were last cleared.
        self._kept: list[ReceivedRequest] = []
        self._ledger: DeliveryLedger | None = None

    def __enter__(self) -> Self:
        self.apns.start()
        self.fcm.start()
        self.env = {
            **os.environ,
            # The drill's own stores (SQLite under home unless its settings name
            # a database), never a DATABASE_URL exported for `make demo`.
            "DATABASE_URL": "",
            "KAFKA_BROKER": self.ctx.bootstrap,
            # A group of its own: a drill's worker starts from the topics'
            # beginning, and earlier drills' notifications are for other users.
            "KAFKA_GROUP_ID": f"drill-{self.home.name}",
            **fake_provider_env(self.apns, self.fcm, self.home),
            **self._settings,
        }
        admin = KafkaAdminClient(bootstrap_servers=self.ctx.bootstrap, client_id="drills")
        try:
            reconcile(admin, ALL_TOPIC_SPECS)
        finally:
            admin.close()
        self._register_phones()
        # The workers' ledger: SQLite under home, or DATABASE_URL's if the
        # drill's settings give one.
        self._ledger = build_ledger(settings_from(self.env))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._ledger is not None:
            self._ledger.close()
        self.apns.stop()
        self.fcm.stop()

    def _register_phones(self) -> None:
        registry = build_registry(settings_from(self.env))
        try:
            for u in range(USERS):
                user = f"{self.name}-user-{u}"
                tokens = [("ios", secrets.token_hex(32), self.apns.bundle_id),
                          ("android", f"drill-{secrets.token_urlsafe(32)}", ANDROID_APP)]
                if u % SECOND_IPHONE_EVERY == 0:
                    tokens.append(("ios", secrets.token_hex(32), self.apns.bundle_id))
                for platform, token, app in tokens:
                    registry.register(user, platform, token, app)
                self.phones[user] = [token_key(token) for _, token, _ in tokens]
                self.iphone_tokens[user] = [token for platform, token, _ in tokens
                                            if platform == "ios"]
                self.iphones |= {token_key(token) for token in self.iphone_tokens[user]}
        finally:
            registry.close()

    # -- driving -----------------------------------------------------------------

    def send(self, count: int, kinds: tuple[str, ...] = ("like", "match"),
             users: list[str] | None = None) -> list[str]:
        """``count`` notifications, of ``kinds`` in turn (see bench.drills._send),
        round the ``users`` (default: all); returns their ids."""
        users = users or list(self.phones)
        wanted = [(kinds[i % len(kinds)], users[i % len(users)]) for i in range(count)]
        done = subprocess.run([sys.executable, "-m", "bench.drills._send"],
                              input=json.dumps(wanted), env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=True)
        lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
        if len(lines) != count:
            raise RuntimeError(f"sent {len(lines)} of {count} notifications")
        ids = [line[0] for line in lines]
        self.sent.update(zip(ids, (user for _, user in wanted), strict=True))
        self.sent_at.update((line[0], int(line[1]) / 1000) for line in lines)
        return ids

    def start_worker(self, host: Host | None = None, processes: int = 1
                     ) -> subprocess.Popen[bytes]:
        """The production worker command, on the drill's settings; on ``host``
        (from :meth:`host`): in its folder, with its own settings and files."""
        command = worker_command(processes=processes, threads=THREADS)
        if host is None:
            return start(command, self.home / "worker.log", env=self.env)
        return start(command, host.folder / "worker.log", env=host.env, cwd=host.folder)

    def host(self, name: str) -> Host:
        """A worker host of its own: a folder that is its working directory,
        with its own copies of the providers' files and its own analytics,
        SQLite paths and Kafka client id. Hosts share the drill's Kafka group,
        and its DATABASE_URL if the settings give one: nothing else."""
        folder = self.home / name
        env = {**self.env, **fake_provider_env(self.apns, self.fcm, folder, own_copies=True),
               "KAFKA_CLIENT_ID": name, **self._settings}
        return Host(name, folder, env)

    def break_providers(self, retry_after_s: float) -> None:
        """APNs answers 500, FCM 429 with Retry-After, until :meth:`recover`."""
        self.apns.fail(500, "InternalServerError", times=UNTIL_RECOVERED)
        self.fcm.fail(429, "QUOTA_EXCEEDED", times=UNTIL_RECOVERED, retry_after=retry_after_s)

    def recover(self) -> None:
        # The fakes drop faults only together with their record, so the record
        # is kept first. Nothing accepted is lost in between: while the faults
        # stand every push is refused, and clear() empties the record before
        # it drops the faults.
        for fake in (self.apns, self.fcm):
            self._kept += fake.received
            fake.clear()

    # -- counting ----------------------------------------------------------------

    def received(self) -> list[ReceivedRequest]:
        return self._kept + self.apns.received + self.fcm.received

    def pushes(self) -> Counter[Pair]:
        """Accepted pushes per (notification id, token key)."""
        return Counter((str(r.data.get("notification_id")), token_key(r.token or ""))
                       for r in self.received() if r.ok)

    def refused(self) -> Counter[int]:
        """Refused attempts per HTTP status."""
        return Counter(r.status for r in self.received() if not r.ok)

    def expected(self) -> set[Pair]:
        return {(n, key) for n, user in self.sent.items() for key in self.phones[user]}

    def maybe_delivered(self, pairs: set[Pair]) -> set[Pair]:
        """Those of ``pairs`` the ledger holds as maybe delivered."""
        assert self._ledger is not None
        found: set[Pair] = set()
        for n in {n for n, _ in pairs}:
            found |= {(n, key) for key in self._ledger.maybe_delivered(n)}
        return found & pairs

    def in_flight(self) -> int:
        """Claims under a live lease: pushes some worker started."""
        assert self._ledger is not None
        return self._ledger.counts()["in_flight"]

    def wait_pushed(self, pairs: int, timeout_s: float) -> float | None:
        """Seconds until ``pairs`` different pairs were pushed (None: timed out)."""
        return wait_until(lambda: len(self.pushes()) >= pairs, timeout_s, progress=self.progress)

    def settled(self) -> bool:
        """Every expected pair was pushed or is held as maybe delivered."""
        missing = self.expected() - set(self.pushes())
        return not missing or self.maybe_delivered(missing) == missing

    def progress(self) -> str:
        refused = sum(self.refused().values())
        return (f"{len(set(self.pushes()) & self.expected())}/{len(self.expected())} "
                f"pairs pushed, {refused} attempts refused")

    def verdict(self) -> Result:
        """Push-level counts. Lost is the truly lost: never pushed and not held
        as maybe delivered; those are counted apart (skipped by design)."""
        expected = self.expected()
        pushes = self.pushes()
        counts = tally(expected, pushes)
        not_pushed = expected - set(pushes)
        maybe = self.maybe_delivered(not_pushed)
        counts["lost"] = len(not_pushed - maybe)
        return {**counts, "notifications": len(self.sent), "maybe_delivered_skipped": len(maybe),
                "maybe_delivered_but_pushed": len(self.maybe_delivered(set(pushes) & expected)),
                "refused": dict(self.refused()),
                "ok": counts["lost"] == counts["duplicated"] == counts["unexpected"] == 0}

