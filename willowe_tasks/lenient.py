"""Reading records written by a newer producer: fields this version doesn't know.

``send()`` stays strict (an unknown field there is a caller's typo, refused
before it reaches Kafka). A worker is more forgiving: during a rolling deploy a
producer one version ahead may add a field, and refusing it would send every
such record to the dead letters. So the worker drops fields it doesn't know,
validates the rest as strictly as ever, and logs each unknown field once per
process (its name, never its value).
"""

from __future__ import annotations

import logging
import threading
import types
import typing
from typing import Any

from pydantic import BaseModel

__all__ = ["known_fields_only"]

logger = logging.getLogger(__name__)

_reported: set[str] = set()
_reported_lock = threading.Lock()


def known_fields_only(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the keys ``model`` (and its nested models) doesn't
    know, by field name or alias. Anything that isn't a dict where a model is
    expected is left for validation to refuse."""
    unknown: list[str] = []
    kept = _known(model, values, (), unknown)
    for path in unknown:
        _report_once(model, path)
    return kept


def _known(model: type[BaseModel], values: dict[str, Any], path: tuple[str, ...],
           unknown: list[str]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        names[name] = field.annotation
        if field.alias:
            names[field.alias] = field.annotation
    kept = {}
    for key, value in values.items():
        if key not in names:
            unknown.append(".".join((*path, str(key))))
            continue
        nested = _model_of(names[key])
        if nested is not None and isinstance(value, dict):
            value = _known(nested, value, (*path, key), unknown)
        kept[key] = value
    return kept


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, also through ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _model_of(a) is not None]
        return _model_of(models[0]) if len(models) == 1 else None
    return None


def _report_once(model: type[BaseModel], path: str) -> None:
    key = f"{model.__name__}:{path}"
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    logger.warning("Ignoring field %r of %s, which this version does not know (a newer "
                   "producer?); logged once per field.", path, model.__name__)
