"""Command line for the local Kafka: ``python -m broker.localkafka --help``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from broker.localkafka import CLI_TOOLS, KafkaNotReady, LocalKafka


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broker.localkafka",
        description="Run a single-node Apache Kafka (KRaft) on this machine, without Docker.",
    )
    parser.add_argument("--home", type=Path, default=Path(".cache/kafka"),
                        help="folder for the jars, data, config and log (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9092, help="client port (default: %(default)s)")
    parser.add_argument("--controller-port", type=int, default=9093,
                        help="KRaft controller port (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the Kafka jars from Maven Central (once)")
    sub.add_parser("start", help="start Kafka in the background unless it already answers")
    sub.add_parser("stop", help="stop the Kafka this folder started")
    sub.add_parser("kill", help="SIGKILL the Kafka this folder started (to simulate a crash)")
    sub.add_parser("status", help="say whether Kafka answers")
    tool = sub.add_parser(
        "tool", help="run one of Kafka's CLI tools: " + ", ".join(sorted(CLI_TOOLS)),
    )
    tool.add_argument("name", help="tool name, with or without .sh")
    tool.add_argument("args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    args = parser.parse_args(argv)

    kafka = LocalKafka(args.home.resolve(), host=args.host, port=args.port,
                       controller_port=args.controller_port)
    try:
        if args.command == "fetch":
            kafka.fetch_jars()
        elif args.command == "start":
            kafka.start()
        elif args.command == "stop":
            kafka.stop()
        elif args.command == "kill":
            kafka.kill()
        elif args.command == "status":
            up = kafka.answers()
            print(f"Kafka {'answers' if up else 'does not answer'} on {kafka.bootstrap_servers}"
                  + (f" (pid {kafka.pid()}, log {kafka.log_file})" if kafka.pid() else ""))
            return 0 if up else 1
        elif args.command == "tool":
            tool_args = list(args.args)
            # Every tool but the storage formatter talks to a broker: default to ours.
            if args.name.removesuffix(".sh") != "kafka-storage" and not any(
                a.startswith("--bootstrap-server") for a in tool_args
            ):
                tool_args += ["--bootstrap-server", kafka.bootstrap_servers]
            command = kafka.tool_command(args.name, tool_args)
            os.execvp(command[0], command)
    except (KafkaNotReady, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(e.cmd[:1] + e.cmd[-6:])} failed with status {e.returncode}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
