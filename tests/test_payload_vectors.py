"""Python's send() against the shared vectors: the same file the Node client's
tests read, so the two languages accept and refuse the same arguments and
write the same record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from payload_vectors import Vector, load_vectors
from pydantic import ValidationError

from broker.kafka import PARTITION_KEY_OPTION
from willowe_tasks.app import App
from willowe_tasks.registry import DeviceValidationError
from willowe_tasks.settings import load_settings
from willowe_tasks.wire_schema import actors_by_name, registration_actors_by_name

VECTORS = load_vectors()


def _params() -> list[object]:
    params: list[object] = []
    for vector in VECTORS:
        marks = []
        if vector.python_send_differs:
            marks.append(pytest.mark.xfail(strict=True, reason=vector.python_send_differs))
        params.append(pytest.param(vector, id=vector.name, marks=marks))
    return params


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    # Building a message needs no Kafka: nothing here connects.
    application = App(load_settings(kafka_broker="127.0.0.1:9"))
    yield application
    application.close()


@pytest.mark.parametrize("vector", _params())
def test_send_validates_each_vector_as_it_expects(app: App, vector: Vector) -> None:
    registration = registration_actors_by_name(app.actors).get(vector.actor)
    actor = registration or actors_by_name(app.actors)[vector.actor]
    if vector.errors:
        if registration is not None:
            # The registry's rules name the first bad field only.
            with pytest.raises(DeviceValidationError) as refused:
                actor.message(*vector.args)
            assert [refused.value.field] == vector.errors
        else:
            with pytest.raises(ValidationError) as raised:
                actor.message(*vector.args)
            errors = raised.value.errors()
            assert sorted(".".join(map(str, e["loc"])) for e in errors) == sorted(vector.errors)
    else:
        message = actor.message(*vector.args)
        assert message.queue_name == actor.queue_name
        if vector.record_args is not None:
            assert list(message.args) == vector.record_args
        assert message.options.get(PARTITION_KEY_OPTION) == vector.record_key


def test_the_vectors_cover_every_actor_with_valid_and_invalid_arguments(app: App) -> None:
    for name in [*actors_by_name(app.actors), *registration_actors_by_name(app.actors)]:
        outcomes = {bool(v.errors) for v in VECTORS if v.actor == name}
        if name.startswith("send_notification_") or name in ("send_fast_match", "send_one_night"):
            # Same payload model as a sibling that has both kinds of vector.
            assert outcomes, name
        else:
            assert outcomes == {True, False}, name
