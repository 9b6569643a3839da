"""The names an operator may give for a topic, and what they mean.

``--topic high``, ``--topic high-priority-notifications`` and ``--topic
high-priority-notifications.XQ`` all name the high band's topic; dead-letter
commands read its ``.XQ``. Anything else is refused with the list of names
that work, before anything is read or changed.
"""

from __future__ import annotations

from dramatiq.common import dq_name, q_name, xq_name

from willowe_tasks.priorities import BANDS, PriorityBand

__all__ = ["UnknownTopic", "band_of_topic", "resolve_topic"]


class UnknownTopic(ValueError):
    """A topic name that is not one of the application's."""


def resolve_topic(name: str) -> str:
    """The priority topic ``name`` stands for: a priority word, the topic, or its
    ``.DQ``/``.XQ``. Raises :class:`UnknownTopic` listing the accepted names."""
    text = name.strip()
    for band in BANDS:
        topic = band.topic.name
        if text in (band.word, topic, dq_name(topic), xq_name(topic)):
            return topic
    accepted = ", ".join(b.word for b in BANDS) + " or " + ", ".join(b.topic.name for b in BANDS)
    raise UnknownTopic(f"unknown topic {name!r}; expected {accepted} (or a .XQ of those)")


def band_of_topic(topic: str) -> PriorityBand | None:
    """The band whose topic (or its .DQ/.XQ) ``topic`` is, if any."""
    canonical = q_name(topic)
    return next((b for b in BANDS if b.topic.name == canonical), None)
