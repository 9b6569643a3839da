"""Every topic the application uses: each priority band's topic (see
:mod:`willowe_tasks.priorities`, where their shape is written) with its ``.DQ``
and ``.XQ``. ``make topics``, compose.yaml's checks and the tests read it."""

from __future__ import annotations

from broker.topics import TopicSpec
from willowe_tasks.priorities import BANDS

__all__ = ["ALL_TOPIC_SPECS", "PRIORITY_TOPIC_NAMES"]

#: The three topics actors send to, most urgent first.
PRIORITY_TOPIC_NAMES: tuple[str, ...] = tuple(b.topic.name for b in BANDS)

#: Every topic the application uses: each priority topic with its .DQ and .XQ.
ALL_TOPIC_SPECS: tuple[TopicSpec, ...] = tuple(
    companion for b in BANDS for companion in b.topic.with_companions()
)
