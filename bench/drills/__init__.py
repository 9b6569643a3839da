"""Fault drills: ``python -m bench.drills [DRILL ...]`` (``make drills``).

They run on a private Kafka (the project's ``LocalKafka`` on free ports,
sharing the jars in ``.cache/kafka/libs``), never the shared one, since
some drills kill the broker. Each prints sent / processed / lost /
duplicated; the run prints a table, writes ``bench/results/drills-*.json``
and exits 1 if any drill failed.

Message-level drills fill a queue with numbered messages and drain it with
our broker's bench worker, which writes each number to a file before the
message is acked. Lost (never processed) must be 0: delivery is at least
once. Duplicates are redeliveries of what was in flight, and are reported.

* ``worker-kill``: SIGKILL the worker 10 times at spread points of the
  drain, starting a new one at once each time;
* ``kafka-kill``: SIGKILL Kafka a third of the way through and start it
  again after 5 s; the same worker must carry on;
* ``send-down``: with Kafka down, how long ``actor.send()`` takes to fail;
* ``scale``: one worker, three from a third of the way, one again from two
  thirds (the two added ones stopped with SIGTERM); every partition must
  still hold work when the two are added, and each must take a share;
* ``undecodable``: 1,000 raw records that are no message, between 3,000
  good ones: every good one processed, every bad one on ``<queue>.XQ``
  with a reason header, the worker still alive.

Push-level drills run the real notification worker (``dramatiq
willowe_tasks``) against the local fakes of APNs and FCM, for users with
iOS and Android phones, and count accepted pushes per (notification,
device). Duplicated pushes must be 0 (the delivery ledger's promise), and
so must truly lost ones: a pair neither pushed nor recorded as *maybe
delivered* (a claim left by a killed worker, skipped by design; counted).

* ``provider-outage``: APNs answers 500 and FCM 429 with Retry-After for
  a stretch mid-delivery, then both recover;
* ``apns-outage``: APNs answers 503 for 5 minutes while notifications keep
  coming, the worker restarted halfway and some notifications' deadlines
  passing meanwhile: none dead-lettered, every live one pushed once when
  APNs is back, the short-lived ones dropped as expired, Android's p99 at
  most twice its baseline;
* ``device-throttle``: APNs answers 429 TooManyRequests for one iPhone
  while its user keeps getting notifications: that device backs off, the
  others' p99 stays within 1.2× of its baseline;
* ``fcm-quota``: two hosts × two worker processes share a 600-a-minute FCM
  bucket in PostgreSQL and get 900 Android notifications at once: FCM (in
  quota mode) sees at most 600 + the burst in any 60 s, never answers
  QUOTA_EXCEEDED, and nothing is dead-lettered;
* ``slow-provider``: both providers answer after the worker's push timeout
  for a stretch: each timed-out push is accepted all the same, and must not
  be pushed again;
* ``push-kill``: SIGKILL the notification worker repeatedly while pushes
  are in flight, restarting it each time;
* ``two-hosts``: two worker hosts (separate folders, no shared file) on one
  PostgreSQL of the drill's own and one Kafka group, each SIGKILLed in turn
  mid-push, 10 times in all: the ledger in the database must keep every
  pair from being pushed twice.

Cluster drills run on a private three-node Kafka of their own (started
once, when the first of them runs), with a sender calling ``send()`` at
50/s while a bench worker drains the queue (3 copies, 2 in sync): lost
must be 0. See ``_cluster``:

* ``cluster-broker-kill``: SIGKILL a broker, then the active controller's
  node, each for 10 s: no send fails but those caught in the controller's
  failover;
* ``cluster-rolling-restart``: restart the three nodes one by one;
* ``cluster-two-down``: stop two nodes: sends are refused with
  NotEnoughReplicas, never acknowledged with one copy, and go through again
  once a node is back.

The run ends with its total time.
"""
