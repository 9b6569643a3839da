"""Command line for the local Kafka: ``python -m broker.localkafka --help``."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from broker.localkafka import CLI_TOOLS, KafkaNotReady, LocalKafka
from broker.localkafka.cluster import LocalKafkaCluster
from broker.localkafka.secure import SecureLocalKafka

#: Where the jars are unless told otherwise: the plain shape's home keeps
#: them, the other shapes share them.
SHARED_JARS = Path(".cache/kafka/libs")

#: Each shape's home, client port and controller port (node 1's, for a
#: cluster) unless told otherwise, so the shapes can run side by side.
DEFAULTS = {
    "plain": (Path(".cache/kafka"), 9092, 9093),
    "secure": (Path(".cache/kafka-secure"), 9094, 9095),
    "cluster": (Path(".cache/kafka-cluster"), 9192, 9292),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m broker.localkafka",
        description="Run Apache Kafka (KRaft) on this machine, without Docker: one node "
                    "(default), a secured one (--secure) or a cluster (--nodes 3).",
    )
    parser.add_argument("--home", type=Path,
                        help="folder for the data, config and logs (default: .cache/kafka, "
                             ".cache/kafka-secure or .cache/kafka-cluster)")
    parser.add_argument("--jars", type=Path,
                        help="folder of the Kafka jars (default: HOME/libs for one node, "
                             f"{SHARED_JARS} for the other shapes)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int,
                        help="client port (default: 9092, 9094 secured, 9192 for node 1 of a "
                             "cluster, node n on port + n - 1)")
    parser.add_argument("--controller-port", type=int,
                        help="KRaft controller port (default: 9093, 9095 secured, 9292 for "
                             "node 1 of a cluster)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--secure", action="store_true",
                       help="SASL_SSL with SCRAM-SHA-512 users, TLS and ACLs")
    shape.add_argument("--nodes", type=int, default=1,
                       help="how many nodes (default: %(default)s; 2 or more make a cluster)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the Kafka jars from Maven Central (once)")
    for name, text in (("start", "start in the background unless it already answers"),
                       ("stop", "stop what this folder started"),
                       ("kill", "SIGKILL what this folder started (to simulate a crash)")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--node", type=int, help="only this node of a cluster (1 to --nodes)")
    sub.add_parser("status", help="say whether Kafka answers")
    env = sub.add_parser("env", help="print a client's settings as shell exports")
    env.add_argument("user", nargs="?",
                     help="the user, for --secure (admin, web, worker, operator)")
    tool = sub.add_parser(
        "tool", help="run one of Kafka's CLI tools: " + ", ".join(sorted(CLI_TOOLS)),
    )
    tool.add_argument("name", help="tool name, with or without .sh")
    tool.add_argument("args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error(f"--nodes must be at least 1, got {args.nodes}")
    if getattr(args, "node", None) is not None and args.nodes < 2:
        parser.error("--node needs a cluster (--nodes 2 or more)")
    return args


def build(args: argparse.Namespace) -> LocalKafka | LocalKafkaCluster:
    shape = "secure" if args.secure else "cluster" if args.nodes > 1 else "plain"
    home, port, controller_port = DEFAULTS[shape]
    home = (args.home or home).resolve()
    port = args.port or port
    controller_port = args.controller_port or controller_port
    jars = args.jars or (None if shape == "plain" else SHARED_JARS)
    jars = jars.resolve() if jars else None
    if shape == "cluster":
        return LocalKafkaCluster(
            home, nodes=args.nodes, host=args.host, jars=jars,
            ports=range(port, port + args.nodes),
            controller_ports=range(controller_port, controller_port + args.nodes),
        )
    if shape == "secure":
        return SecureLocalKafka(home, host=args.host, port=port,
                                controller_port=controller_port, jars=jars)
    return LocalKafka(home, host=args.host, port=port, controller_port=controller_port, jars=jars)


def run(args: argparse.Namespace, kafka: LocalKafka | LocalKafkaCluster) -> int:
    single = kafka.nodes[0] if isinstance(kafka, LocalKafkaCluster) else kafka
    node = getattr(args, "node", None)
    if isinstance(kafka, LocalKafkaCluster) and node is not None:
        one_node: dict[str, Callable[[int], object]] = {
            "start": kafka.start_node, "stop": kafka.stop_node, "kill": kafka.kill_node}
        one_node[args.command](node)
    elif args.command in ("start", "stop", "kill"):
        getattr(kafka, args.command)()
    elif args.command == "fetch":
        single.fetch_jars()
    elif args.command == "status":
        return status(kafka)
    elif args.command == "env":
        for key, value in client_env(kafka, args.user).items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "tool":
        tool_args = list(args.args)
        # Every tool but the storage formatter talks to a broker: default to ours.
        if args.name.removesuffix(".sh") != "kafka-storage" and not any(
            a.startswith("--bootstrap-server") for a in tool_args
        ):
            tool_args += ["--bootstrap-server", kafka.bootstrap_servers]
        command = single.tool_command(args.name, tool_args)
        os.execvp(command[0], command)
    return 0


def status(kafka: LocalKafka | LocalKafkaCluster) -> int:
    if isinstance(kafka, LocalKafkaCluster):
        print("\n".join(kafka.status()))
        return 0 if kafka.answers() else 1
    up = kafka.answers()
    pid = kafka.pid()
    print(f"Kafka {'answers' if up else 'does not answer'} on {kafka.bootstrap_servers}"
          + (f" (pid {pid}, log {kafka.log_file})" if pid else ""))
    return 0 if up else 1


def client_env(kafka: LocalKafka | LocalKafkaCluster, user: str | None) -> dict[str, str]:
    if not isinstance(kafka, SecureLocalKafka):
        return {"KAFKA_BROKER": kafka.bootstrap_servers}
    if user is None:
        raise ValueError(f"env needs a user with --secure: {', '.join(kafka.all_users)}")
    return kafka.client_env(user)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return run(args, build(args))
    except (KafkaNotReady, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        # The command itself is not shown: a secured Kafka's may hold passwords.
        print(f"error: {Path(e.cmd[0]).name} failed with status {e.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
