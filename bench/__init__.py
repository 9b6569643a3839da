"""Benchmarks of ``broker.KafkaBroker`` against its peers.

``python -m bench`` runs each scenario (enqueue, drain, latency, priority,
memory) for our broker and for every peer that applies: raw kafka-python
loops (the ceiling), dramatiq-kafka, Dramatiq on Redis and Celery on Kafka.
Each system runs in a subprocess with its own interpreter (peers whose pins
clash with ours get their own virtualenv under ``.cache/bench/``), so one
system's imports, threads and garbage never slow another. Results are
medians of several repetitions with their spread, compared against the
goals in :mod:`bench.goals`, printed as a table and written as JSON.
"""
