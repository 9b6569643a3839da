"""The shared test vectors (tests/vectors/payloads.json), read as every
language's tests read them: ``{"$repeat": text, "times": n}`` and
``{"$concat": [...]}`` stand for long strings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parent / "vectors" / "payloads.json"


@dataclass(frozen=True)
class Vector:
    name: str
    actor: str
    args: list[Any]
    #: Field paths the error names; empty for a valid vector.
    errors: list[str]
    #: What the record must carry, when the vector says.
    record_args: list[Any] | None
    #: A registration's partition key (its options' and the Kafka record's), when the vector says.
    record_key: str | None
    #: Why Python's send() does not do what the vector expects (a known bug).
    python_send_differs: str | None


def expand(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$repeat", "times"}:
            return value["$repeat"] * value["times"]
        if set(value) == {"$concat"}:
            return "".join(expand(part) for part in value["$concat"])
        return {key: expand(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item) for item in value]
    return value


def load_vectors() -> list[Vector]:
    raw = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
    return [
        Vector(name=v["name"], actor=v["actor"], args=expand(v["args"]),
               errors=v.get("errors", []),
               record_args=expand(v["record_args"]) if "record_args" in v else None,
               record_key=v.get("record_key"),
               python_send_differs=v.get("python_send_differs"))
        for v in raw
    ]
