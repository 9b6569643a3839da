"""Virtualenvs for the peers whose pins clash with ours, under ``.cache/bench/``.

Installing is idempotent: a marker file records what was installed, and a
venv whose marker matches its requirements is reused as is. A failed install
is reported and the peer skipped, so one unreachable package never sinks
the whole run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.log import say

#: The repository root (``bench/`` lives directly under it).
ROOT = Path(__file__).resolve().parents[1]

#: Where peer virtualenvs and tools are installed (ignored by git).
CACHE = ROOT / ".cache" / "bench"

#: Longest one ``pip install`` may take, in seconds.
INSTALL_TIMEOUT_S = 900

_MARKER = ".bench-installed"


class EnvUnavailable(RuntimeError):
    """A peer's virtualenv could not be made; the peer is skipped."""


@dataclass(frozen=True)
class Env:
    """A virtualenv holding exactly ``requirements`` (pip specifiers)."""

    name: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return CACHE / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ready(self) -> bool:
        marker = self.path / _MARKER
        try:
            return json.loads(marker.read_text()) == list(self.requirements)
        except (OSError, ValueError):
            return False

    def ensure(self) -> Path:
        """Install the venv unless it is already there; return its python."""
        if self.ready() and self.python.exists():
            return self.python
        say(f"installing {self.name} into {self.path} ({' '.join(self.requirements)}) …")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(self.path)], f"create venv {self.name}")
        _run([str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              *self.requirements], f"pip install for {self.name}")
        (self.path / _MARKER).write_text(json.dumps(list(self.requirements)))
        return self.python

    def installed_versions(self, *names: str) -> dict[str, str]:
        """Versions of ``names`` inside this venv (for the results' machine facts)."""
        return package_versions(self.python, names)


def package_versions(python: Path | str, names: tuple[str, ...] | list[str]) -> dict[str, str]:
    code = (
        "import json, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = version(n)\n"
        "    except PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    try:
        done = subprocess.run([str(python), "-c", code, *names], capture_output=True,
                              text=True, timeout=60, check=True)
        return {k: v for k, v in json.loads(done.stdout).items() if v}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def _run(cmd: list[str], what: str) -> None:
    try:
        subprocess.run(cmd, check=True, timeout=INSTALL_TIMEOUT_S, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or e.stdout or "").strip().splitlines()[-5:]
        raise EnvUnavailable(f"{what} failed: {' / '.join(tail)}") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvUnavailable(f"{what} failed: {e}") from None


#: dramatiq-kafka pins kafka-python 2.0.2, which would replace our 3.x; it does not
#: declare its dependency on dramatiq, so the version we measure with is added.
DRAMATIQ_KAFKA = Env("dramatiq-kafka", ("dramatiq-kafka==0.1.9", "dramatiq==2.2.1"))

#: Dramatiq's Redis extra, at the Dramatiq version our broker is measured with.
DRAMATIQ_REDIS = Env("dramatiq-redis", ("dramatiq[redis]==2.2.1",))

#: Celery with kombu's confluentkafka transport.
CELERY_KAFKA = Env("celery-kafka", ("celery", "confluent-kafka"))

#: Profilers, kept out of the project's venv.
TOOLS = Env("tools", ("py-spy", "pyinstrument"))
