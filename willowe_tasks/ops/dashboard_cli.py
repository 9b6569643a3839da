"""``python -m willowe_tasks dashboard``: serve the operator dashboard."""

from __future__ import annotations

import argparse

from willowe_tasks.settings import load_settings

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="serve the operator dashboard (lag, throughput, dead letters, replay)",
        description="Serve a page of lag per priority, throughput, error rate and latency"
                    " (from DASHBOARD_METRICS_URL), group members and dead letters by cause,"
                    " with a replay per cause. Read-only unless DASHBOARD_OPERATOR_TOKEN is"
                    " set.")
    dashboard.add_argument("--host", help="address to listen on (default: DASHBOARD_HOST,"
                                          " 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, help="port (default: DASHBOARD_PORT, 8080)")
    dashboard.set_defaults(run=_serve)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: a web server is what this command is for, not the others.
    import uvicorn

    from willowe_tasks.ops.dashboard import create_app

    settings = load_settings()
    host = args.host or settings.dashboard_host
    port = args.port or settings.dashboard_port
    access = ("read-only (set DASHBOARD_OPERATOR_TOKEN to allow replay and purge)"
              if settings.dashboard_operator_token is None
              else "replay and purge need the operator token")
    print(f"Dashboard on http://{host}:{port}/ for group {settings.kafka_group_id} on"
          f" {settings.kafka_broker}; {access}.", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    return 0
