"""The push scenario's yardstick: our APNs and FCM clients alone, no worker.

The ceiling (threads ÷ latency) counts only the fakes' answer delay; each
request also costs the fakes' own work (TLS, HTTP/2, checking the provider
token and the payload) and our client's. So before a repetition's worker
runs, a child process (``python -m bench.push_client COUNT THREADS``, with
the repetition's settings) pushes the same kind of notification to fakes
of its own from as many threads, each waiting for its answer as a worker
thread does, with no Kafka, Dramatiq or ledger at all: the most a worker
could reach with these clients here. The worker's rate over it is what the
worker itself costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.envs import ROOT
from bench.push import users
from bench.push_fakes import provider_fakes

#: Pushes each client thread makes before the clock starts: clients built,
#: connections opened, the OAuth token fetched.
WARM_UP_PER_THREAD = 2

#: How long the child may take, in seconds.
CHILD_TIMEOUT_S = 300.0


class ClientAloneFailed(RuntimeError):
    """The clients-alone measure could not be made."""


def client_alone(*, n: int, threads: int, latency_s: float, workdir: Path) -> dict[str, float]:
    """Pushes per second of ``threads`` threads pushing ``n`` notifications
    (one device each, half iOS, half Android) straight through our clients
    (``rate``), the client process's CPU per push (``cpu_ms_per_push``) and
    the pushes the fakes accepted, warm-up included (``pushed``), against
    fakes answering after ``latency_s``."""
    from willowe_tasks.testing import fake_provider_env

    workdir.mkdir(parents=True, exist_ok=True)
    with provider_fakes(latency_s=latency_s, log=workdir / "fakes.log") as fakes:
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               **fake_provider_env(fakes.apns, fakes.fcm, workdir)}
        child = subprocess.run(
            [sys.executable, "-m", "bench.push_client", str(n), str(threads)], env=env,
            cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
        ios, android = fakes.split()
        accepted = sum(1 for r in ios + android if r.ok)
    if child.returncode != 0:
        raise ClientAloneFailed(f"client child exited {child.returncode}: "
                                f"{child.stderr.strip()[-500:]}")
    try:
        figures: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise ClientAloneFailed(f"client child printed no figures: {e}") from e
    # A push refused or never made would make the rate mean nothing.
    expected = n + WARM_UP_PER_THREAD * threads
    if accepted != expected:
        raise ClientAloneFailed(f"the fakes accepted {accepted} of {expected} pushes")
    figures["pushed"] = accepted
    return figures


def _main(n: int, threads: int) -> None:
    """The child: push through the clients from ``threads`` threads; print
    the rate and CPU per push as JSON."""
    from willowe_tasks import send_match
    from willowe_tasks.dispatch import push_for
    from willowe_tasks.providers import provider_for
    from willowe_tasks.registry import Device
    from willowe_tasks.settings import load_settings

    settings = load_settings()
    clients = {platform: provider_for(platform).build(settings)
               for platform in ("ios", "android")}
    preview = send_match.preview
    assert preview is not None
    warm_up = WARM_UP_PER_THREAD * threads
    pushes = []
    for user in users("client-alone", n + warm_up):
        # The notification the worker would push for this match (the actor's
        # own preview of it), to this user's one device.
        notification, _ = preview(send_match.arguments.model_validate(
            {"user_id": user.user_id, "payload": {"name": "Анна", "age": 25}}))
        device = Device(user.user_id, user.platform, user.token,
                        settings.apns_topic if user.platform == "ios" else "com.willowe.android")
        pushes.append((user.platform, push_for(notification, device)))
    failures: list[BaseException] = []

    def push_share(share: list[tuple[str, Any]]) -> None:
        try:
            for platform, push in share:
                client = clients[platform]
                assert client is not None, f"{platform}: no credentials in the settings"
                client.send(push)
        except BaseException as e:  # reported by the parent, with the rest
            failures.append(e)

    def run(batch: list[tuple[str, Any]]) -> float:
        workers = [threading.Thread(target=push_share, args=(batch[k::threads],))
                   for k in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(CHILD_TIMEOUT_S)
        return time.perf_counter() - started

    run(pushes[n:])
    cpu_before = time.process_time()
    elapsed = run(pushes[:n])
    cpu = time.process_time() - cpu_before
    if failures:
        sys.exit(f"{len(failures)} pushes failed; the first: {failures[0]!r}")
    print(json.dumps({"rate": n / elapsed, "cpu_ms_per_push": 1000 * cpu / n}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.push_client COUNT THREADS")
    _main(int(sys.argv[1]), int(sys.argv[2]))
