"""Operator tools: what the on-call engineer runs and looks at.

- :mod:`.status`: lag per topic and partition (messages and seconds), group
  members, dead letters waiting; ``python -m willowe_tasks status``.
- :mod:`.dead_letters`: reading and filtering ``.XQ`` records;
  :mod:`.replay` sends them back to their topics with a fresh retry budget;
  :mod:`.purge` deletes old ones; ``python -m willowe_tasks dlq …``.
- :mod:`.audit`: one JSON line per operator action.
- :mod:`.dashboard`: a server-rendered page of all of it, with replay.

Everything is read from Kafka (and the workers' metrics, for the dashboard),
so it works while every worker is down.
"""
