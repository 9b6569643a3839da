"""The push bench's fake APNs and FCM as one Go process (``bench/fastfake/*.go``).

The Python fakes of :mod:`willowe_tasks.testing` frame HTTP/2 in pure Python
and cost more CPU per push than the worker they measure; run inside the
bench's process on the same cores, they capped the push scenarios. The Go
program speaks the same protocols with the same rules (TLS + HTTP/2, provider
tokens, the OAuth JWT-bearer grant, the size limits) for a fraction of the CPU,
in a process of its own whose CPU is read apart from the worker's.

The certificates and keys are made here with the Python fakes' own helpers
(:class:`~willowe_tasks.testing._server.TLSFiles`, the service-account file of
:class:`~willowe_tasks.testing._google_oauth.TokenIssuer`), so the worker is
configured exactly as against the Python fakes. The program is built with
``go build`` into ``.cache/fastfake/`` on first use, and again whenever a
source file is newer than the binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.envs import ROOT
from bench.proc_cpu import session_cpu_s
from bench.runner import start, terminate_all

__all__ = ["FastFakeUnavailable", "FastFakes", "Received", "build"]

#: The Go sources (a module of their own, standard library only).
SOURCE = Path(__file__).resolve().parent

#: Where ``go build`` puts the program (``.cache/`` is ignored by git).
BINARY = ROOT / ".cache" / "fastfake" / "fastfake"

#: Longest a build may take, seconds (a cold Go build cache compiles net/http).
BUILD_TIMEOUT_S = 300

#: How long the program may take to bind its listeners, seconds.
READY_TIMEOUT_S = 15.0

#: Poll interval while waiting for the program to be ready, seconds.
READY_POLL_S = 0.02

#: Longest error output of a failed build quoted in the reason, characters.
ERROR_TAIL_CHARS = 500


class FastFakeUnavailable(RuntimeError):
    """The Go fakes can't be used here (no ``go``, or the build failed)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One push the fakes answered, as the bench's checks read it (the same
    attributes as :class:`~willowe_tasks.testing.ReceivedRequest` has for them)."""

    provider: str
    status: int
    received_at: float
    #: The client's end of the connection it came on (``host:port``).
    connection: str
    token: str
    notification_id: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def data(self) -> dict[str, str]:
        return {"notification_id": self.notification_id} if self.notification_id else {}


def build() -> Path:
    """The program, built if missing or older than its sources;
    :class:`FastFakeUnavailable` if ``go`` is missing or the build fails."""
    go = shutil.which("go")
    if go is None:
        raise FastFakeUnavailable("go is not on PATH")
    sources = [*SOURCE.glob("*.go"), SOURCE / "go.mod"]
    if BINARY.exists() and BINARY.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return BINARY
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    # GOTOOLCHAIN=local: the installed toolchain, never one fetched on demand.
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    try:
        done = subprocess.run([go, "build", "-o", str(BINARY), "."], cwd=SOURCE, env=env,
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FastFakeUnavailable(f"go build failed: {e}") from None
    if done.returncode != 0:
        raise FastFakeUnavailable(f"go build failed: {done.stderr.strip()[-ERROR_TAIL_CHARS:]}")
    return BINARY


@dataclass
class _Tail:
    """Reads the lines appended to the record file since the last read."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    records: list[Received] = field(default_factory=list)

    def read(self) -> list[Received]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.records
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            provider, status, at, connection, notification_id, token = (
                line.decode().split("\t"))
            self.records.append(Received(provider, int(status), float(at), connection, token,
                                         notification_id))
        return self.records


@dataclass(frozen=True)
class APNsEndpoint:
    """What a worker needs to reach the fake APNs (as :class:`FakeAPNs` has it)."""

    url: str
    ca_file: str
    signing_key_path: str
    bundle_id: str
    team_id: str
    key_id: str


@dataclass(frozen=True)
class FCMEndpoint:
    """What a worker needs to reach the fake FCM (as :class:`FakeFCM` has it)."""

    url: str
    ca_file: str
    service_account: dict[str, str]
    project_id: str

    def write_service_account(self, path: str | Path) -> str:
        """The service-account key file whose ``token_uri`` is the fake's."""
        from willowe_tasks.testing._google_oauth import write_service_account_file

        return write_service_account_file(self.service_account, path)


class FastFakes:
    """The Go fakes, started for one repetition (a context manager).

    :attr:`apns` and :attr:`fcm` hold what ``fake_provider_env`` reads;
    :meth:`received` what arrived; :meth:`cpu_s` the program's CPU seconds.
    ``log`` gets the program's output (it logs nothing per push); with
    ``cpu_profile`` the program writes a Go CPU profile there when stopped
    (``go tool pprof``).
    """

    def __init__(self, *, latency_s: float, log: Path, cpu_profile: Path | None = None) -> None:
        self.latency_s = latency_s
        self._log = log
        self._cpu_profile = cpu_profile
        self._directory = Path(tempfile.mkdtemp(prefix="willowe-fastfake-"))
        self._tail = _Tail(self._directory / "received.tsv")
        self._process: subprocess.Popen[bytes] | None = None
        self.apns: APNsEndpoint
        self.fcm: FCMEndpoint

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def received(self) -> list[Received]:
        """Every push answered so far, refused ones included (read incrementally)."""
        return self._tail.read()

    def cpu_s(self) -> float:
        """CPU seconds the program has used so far."""
        assert self._process is not None
        return session_cpu_s(self._process.pid)

    def _start(self) -> None:
        # (Imported here: importing willowe_tasks builds its application
        # from the environment.)
        from willowe_tasks.testing._google_oauth import TokenIssuer, new_service_account_key_pem
        from willowe_tasks.testing._server import TLSFiles
        from willowe_tasks.testing.fake_apns import (
            DEFAULT_BUNDLE_ID,
            DEFAULT_KEY_ID,
            DEFAULT_TEAM_ID,
            signing_key_pem,
        )
        from willowe_tasks.testing.fake_fcm import DEFAULT_PROJECT_ID

        binary = build()
        tls = TLSFiles(self._directory)
        apns_key = self._directory / f"AuthKey_{DEFAULT_KEY_ID}.p8"
        apns_key.write_text(signing_key_pem())
        sa_pem = new_service_account_key_pem()
        sa_key = self._directory / "service-account.key"
        sa_key.write_text(sa_pem)
        issuer = TokenIssuer(sa_pem)
        account = issuer.add_account(DEFAULT_PROJECT_ID)
        ready = self._directory / "ready.json"
        self._process = start([
            str(binary), "-cert", tls.cert_file, "-key", tls.key_file,
            "-apns-key", str(apns_key), "-team-id", DEFAULT_TEAM_ID,
            "-key-id", DEFAULT_KEY_ID, "-bundle-id", DEFAULT_BUNDLE_ID,
            "-sa-key", str(sa_key), "-client-email", account.client_email,
            "-project-id", DEFAULT_PROJECT_ID, "-latency", f"{self.latency_s}s",
            "-record", str(self._tail.path), "-ready", str(ready),
            *(["-cpuprofile", str(self._cpu_profile)] if self._cpu_profile else [])], self._log)
        ports = self._wait_ready(ready)
        self.apns = APNsEndpoint(f"https://127.0.0.1:{ports['apns']}", tls.ca_file,
                                 str(apns_key), DEFAULT_BUNDLE_ID, DEFAULT_TEAM_ID,
                                 DEFAULT_KEY_ID)
        fcm_url = f"https://127.0.0.1:{ports['fcm']}"
        self.fcm = FCMEndpoint(fcm_url, tls.ca_file,
                               issuer.info(account, fcm_url, f"{fcm_url}/token"),
                               DEFAULT_PROJECT_ID)

    def _wait_ready(self, ready: Path) -> dict[str, int]:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready.exists():
                ports: dict[str, int] = json.loads(ready.read_text())
                return ports
            if self._process.poll() is not None:
                raise FastFakeUnavailable(
                    f"fastfake exited {self._process.returncode}; see {self._log}")
            time.sleep(READY_POLL_S)
        raise FastFakeUnavailable(f"fastfake not ready in {READY_TIMEOUT_S:g}s; see {self._log}")

    def _stop(self) -> None:
        if self._process is not None:
            terminate_all([self._process])
        shutil.rmtree(self._directory, ignore_errors=True)
