"""Worker processes: killed, added, removed and started through the dramatiq
CLI, against the real Kafka. Each records what it processed in a file
(``worker_app.py`` beside this file), so the tests see exactly what ran where."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pytest
from broker_support import ROOT, BrokerFactory, committed, wait_until
from kafka import KafkaAdminClient

from broker import KafkaBroker

#: The app's module path from the project root (``tests.<this folder>.worker_app``).
APP = ".".join(Path(__file__).with_name("worker_app").relative_to(ROOT).parts)


@dataclass(frozen=True)
class Processed:
    pid: int
    queue: str
    n: int
    partition: int
    offset: int


class Apps:
    """Worker processes started by one test; whatever still runs at the end is
    stopped (SIGTERM, then SIGKILL of the process group the test created)."""

    def __init__(self, tmp_path: Path, bootstrap: str, group_id: str) -> None:
        self.record = tmp_path / "processed.log"
        self.logs = tmp_path
        self.env = {**os.environ, "BROKER_TEST_BOOTSTRAP": bootstrap,
                    "BROKER_TEST_GROUP": group_id, "BROKER_TEST_RECORD": str(self.record)}
        self.env.pop("PYTHONPATH", None)  # the app must import this tree's broker
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *, queues: list[str], args: list[str] | None = None, threads: int = 4,
              delay_s: float = 0.0, partitions: int = 1,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, "BROKER_TEST_QUEUES": ",".join(queues),
               "BROKER_TEST_THREADS": str(threads), "BROKER_TEST_DELAY_S": str(delay_s),
               "BROKER_TEST_PARTITIONS": str(partitions), **(extra_env or {})}
        command = args or [sys.executable, "-m", APP]
        log = (self.logs / f"app-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        log.close()
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
        """SIGTERM (a clean stop: in-flight work finishes and is committed)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise AssertionError(f"worker {process.pid} ignored SIGTERM for {timeout_s}s:\n"
                                 + self.output()) from None

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def processed(self) -> list[Processed]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [Processed(int(p), q, int(n), int(part), int(off))
                for p, q, n, part, off in (line.split() for line in lines)]

    def output(self) -> str:
        return "\n".join(f"--- {log.name}:\n" + log.read_text(errors="replace")[-3000:]
                         for log in sorted(self.logs.glob("app-*.log")))

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def apps(tmp_path: Path, kafka_bootstrap: str, group_id: str) -> Iterator[Apps]:
    running = Apps(tmp_path, kafka_bootstrap, group_id)
    yield running
    running.close()


def send(broker: KafkaBroker, queue: str, actor: str, numbers: range,
         keyed: bool = False) -> None:
    broker.declare_queue(queue)
    with broker.batch():
        for n in numbers:
            options = {"partition_key": str(n)} if keyed else {}
            broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor, args=(n,),
                                            kwargs={}, options=options))


def assignments(admin: KafkaAdminClient, group_id: str) -> dict[str, dict[str, list[int]]]:
    """member id → topic → partitions assigned, as the group coordinator sees it."""
    group = admin.describe_groups([group_id])[group_id]
    result: dict[str, dict[str, list[int]]] = {}
    for member in group["members"]:
        assigned = (member.get("member_assignment") or {}).get("assigned_partitions") or []
        result[member["member_id"]] = {a["topic"]: sorted(a["partitions"]) for a in assigned}
    return result


def subscribed_topics(admin: KafkaAdminClient, group_id: str) -> set[str]:
    group = admin.describe_groups([group_id])[group_id]
    return {topic for member in group["members"]
            for topic in (member.get("member_metadata") or {}).get("topics", [])}


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_mid_batch_loses_nothing(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    apps: Apps,
) -> None:
    # Given 400 messages on one partition and a worker process working through them
    total = 400
    broker = make_broker()
    send(broker, queue_name, "record_0", range(total))
    first = apps.start(queues=[queue_name], threads=4, delay_s=0.01)
    wait_until(lambda: len(apps.processed()) >= 100, timeout_s=90,
               what="the first worker to process 100 messages")

    # When it is killed with SIGKILL mid-batch
    apps.kill(first)
    done_before_kill = {p.n for p in apps.processed()}
    committed_at_kill = committed(admin, group_id, queue_name)[0] or 0

    # Then everything below its committed offset had really been processed
    assert set(range(committed_at_kill)) <= done_before_kill
    assert len(done_before_kill) < total, "the kill came too late to test anything"

    # When a new worker process starts in the same group
    second = apps.start(queues=[queue_name], threads=4)
    broker.join(queue_name, timeout=120_000)
    assert apps.stop(second) == 0

    # Then every message was processed at least once
    processed = apps.processed()
    assert {p.n for p in processed} == set(range(total)), apps.output()
    # And the second worker resumed from the committed offset, not from the start
    assert min(p.offset for p in processed if p.pid == second.pid) == committed_at_kill


@pytest.mark.slow
def test_two_worker_processes_share_partitions_and_adding_or_removing_one_loses_nothing(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    apps: Apps,
) -> None:
    # Given 400 messages spread over four partitions, and one worker process on them
    broker = make_broker(topic_partitions=4)
    send(broker, queue_name, "record_0", range(400), keyed=True)
    def start_worker() -> subprocess.Popen[bytes]:
        return apps.start(queues=[queue_name], threads=2, delay_s=0.03, partitions=4)

    first = start_worker()
    wait_until(lambda: len(apps.processed()) >= 40, timeout_s=90,
               what="the first worker to get going")

    # When a second worker process joins under load
    second = start_worker()

    # Then the two split the queue's partitions between them
    def queue_split() -> bool:
        owners = [topics.get(queue_name, []) for topics in assignments(admin, group_id).values()]
        owners = [partitions for partitions in owners if partitions]
        return len(owners) == 2 and sorted(sum(owners, [])) == [0, 1, 2, 3]

    wait_until(queue_split, timeout_s=60, what="both workers to own queue partitions")
    wait_until(lambda: sum(p.pid == second.pid for p in apps.processed()) >= 20,
               timeout_s=60, what="the second worker to process messages")

    # When more messages arrive and the first worker is stopped under load
    send(broker, queue_name, "record_0", range(400, 700), keyed=True)
    wait_until(lambda: any(p.n >= 400 for p in apps.processed()), timeout_s=60,
               what="the second batch to start")
    assert apps.stop(first) == 0

    # Then the second takes over everything, and nothing is lost
    broker.join(queue_name, timeout=120_000)
    processed = apps.processed()
    assert {p.n for p in processed} == set(range(700)), apps.output()
    by_pid = {pid: {p.partition for p in processed if p.pid == pid}
              for pid in (first.pid, second.pid)}
    assert by_pid[first.pid] and by_pid[second.pid]
    assert by_pid[second.pid] == {0, 1, 2, 3}
    assert apps.stop(second) == 0


@pytest.mark.slow
def test_the_dramatiq_cli_consumes_only_the_queues_given_by_queues(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    apps: Apps,
) -> None:
    # Given an app with two queues, X and Y, with messages waiting on both
    # (one of X's delayed, so it goes through X.DQ)
    x, y = f"{queue_name}-x", f"{queue_name}-y"
    broker = make_broker()
    send(broker, y, "record_1", range(5))
    send(broker, x, "record_0", range(5))
    broker.enqueue(dramatiq.Message(queue_name=x, actor_name="record_0", args=(99,),
                                    kwargs={}, options={}), delay=300)

    # When the dramatiq CLI runs it with --queues X
    cli = apps.start(queues=[x, y], args=[
        sys.executable, "-m", "dramatiq", APP, "--queues", x, "--processes", "1",
        "--threads", "2",
    ])
    wait_until(lambda: sorted(p.n for p in apps.processed() if p.queue == x)
               == [0, 1, 2, 3, 4, 99], timeout_s=90, what=f"X's messages\n{apps.output()}")

    # Then only X and its delay queue are consumed: Y has no consumer (the
    # group may be between generations, when Kafka describes its members
    # without their topics: asked again until it is stable, within bounds), and
    # none of its messages ran or were committed
    wait_until(lambda: subscribed_topics(admin, group_id) == {x, f"{x}.DQ"}, timeout_s=30,
               interval_s=0.5, what="the group to subscribe X and X.DQ alone")
    assert [p for p in apps.processed() if p.queue == y] == []
    assert committed(admin, group_id, y) == {0: None}
    assert broker.backlog(y) == 5

    # And the CLI stops cleanly on SIGTERM
    assert apps.stop(cli) == 0, apps.output()


FORK_SCRIPT = """
import os, signal, sys
import dramatiq
from broker import KafkaBroker

bootstrap, group, used_before, new_after = sys.argv[1:5]
broker = KafkaBroker(bootstrap_servers=bootstrap, group_id=group, topic_partitions=1)
before = dramatiq.actor(broker=broker, queue_name=used_before, actor_name="before")(print)
after = dramatiq.actor(broker=broker, queue_name=new_after, actor_name="after")(print)
before.send()  # the parent now has a producer and an admin client, with IO threads
child = os.fork()
if child == 0:
    signal.alarm(30)  # a hang fails the test instead of stalling it
    after.send()  # a topic the parent never made: producer and admin client both needed
    os._exit(0 if broker.backlog(new_after) == 1 else 3)
_, status = os.waitpid(child, 0)
print("child exit status", os.waitstatus_to_exitcode(status))
sys.exit(0 if status == 0 else 1)
"""


def test_a_broker_used_before_a_fork_works_in_the_child(
    make_broker: BrokerFactory, queue_name: str, group_id: str, kafka_bootstrap: str,
) -> None:
    # Given a process whose broker has sent a message (as a web server that
    # preloads the app does), and then forks
    used_before, new_after = f"{queue_name}-before", f"{queue_name}-after"
    cleanup = make_broker()  # (declares the topics, so they are deleted afterwards)
    for queue in (used_before, new_after):
        cleanup.declare_queue(queue)

    # When the child sends to a queue whose topic does not exist yet
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, kafka_bootstrap, group_id, used_before, new_after],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )

    # Then it gets there, instead of waiting forever on the parent's clients
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "child exit status 0" in result.stdout


#: A session so long that no test here waits it out: whatever moves sooner
#: moved because of static membership, not because the session ended.
LONG_SESSION_MS = "120000"

#: Bound on each wait in the static membership tests, in seconds.
STATIC_WAIT_S = 60.0


@pytest.mark.slow
def test_a_restarted_static_worker_takes_its_partitions_straight_back(
    apps: Apps, make_broker: BrokerFactory, queue_name: str, tmp_path: Path,
) -> None:
    # Given a static worker, with a session far longer than this test, busy
    # with a backlog
    static = {"BROKER_TEST_SLOTS": str(tmp_path / "slots"),
              "BROKER_TEST_SESSION_MS": LONG_SESSION_MS}
    send(make_broker(topic_partitions=2), queue_name, "record_0", range(300))
    first = apps.start(queues=[queue_name], partitions=2, delay_s=0.02, extra_env=static)
    wait_until(lambda: len(apps.processed()) >= 50, timeout_s=STATIC_WAIT_S,
               what="the first worker to start")
    # When it is SIGKILLed and started again
    apps.kill(first)
    second = apps.start(queues=[queue_name], partitions=2, delay_s=0.02, extra_env=static)
    # Then the new process works the backlog to its end long before the dead
    # member's session could have run out: it came back as the same member
    wait_until(lambda: {p.n for p in apps.processed()} == set(range(300)),
               timeout_s=STATIC_WAIT_S, what="the restarted worker to finish")
    assert second.pid in {p.pid for p in apps.processed()}


@pytest.mark.slow
def test_a_static_worker_stopped_cleanly_hands_its_partitions_over_at_once(
    apps: Apps, make_broker: BrokerFactory, queue_name: str, tmp_path: Path,
    admin: KafkaAdminClient, group_id: str,
) -> None:
    static = {"BROKER_TEST_SLOTS": str(tmp_path / "slots"),
              "BROKER_TEST_SESSION_MS": LONG_SESSION_MS}
    send(make_broker(topic_partitions=2), queue_name, "record_0", range(200))
    # Given two static workers sharing the queue's two partitions
    one = apps.start(queues=[queue_name], partitions=2, delay_s=0.05, extra_env=static)
    other = apps.start(queues=[queue_name], partitions=2, delay_s=0.05, extra_env=static)
    wait_until(lambda: len({p.pid for p in apps.processed()}) == 2,
               timeout_s=STATIC_WAIT_S, what="both workers to take a share")
    # (two live processes, each one member for the queue and its .DQ: two
    # identities, one per slot)
    group = admin.describe_groups([group_id])[group_id]
    instance_ids = [m.get("group_instance_id") for m in group["members"]]
    assert None not in instance_ids and len(set(instance_ids)) == len(instance_ids) == 2
    # When one is stopped with SIGTERM
    assert apps.stop(one) == 0
    # Then the other finishes everything, without waiting out a session
    wait_until(lambda: {p.n for p in apps.processed()} == set(range(200)),
               timeout_s=STATIC_WAIT_S, what="the other worker to finish")
    assert other.poll() is None
