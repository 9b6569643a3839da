"""Refusing at ``send()`` a notification too big for APNs or FCM.

The worker would build the same push and the provider would refuse it, or
worse, one provider would take it and the other dead-letter it. So ``send()``
builds the push with the worker's own code (:func:`willowe_tasks.dispatch.push_for`)
and has every registered provider measure it with its own builder, in UTF-8
bytes. The user's devices are not known yet, so it must fit them all.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from willowe_tasks.dispatch import Notification, push_for
from willowe_tasks.providers import providers
from willowe_tasks.registry import Device

__all__ = ["check_fits"]

#: Stands in for a phone when measuring: device tokens and app ids travel
#: outside the payload every provider counts, so any will do.
_SOME_DEVICE = Device(user_id="-", platform="ios", token="00" * 32, app_id="-")


def check_fits(notification: Notification, texts: dict[tuple[str, ...], str], *,
               title: str) -> None:
    """Raise a ``ValidationError`` when ``notification`` would be too big for a
    provider. It names the longest of ``texts`` (field location → its text),
    the field a caller would shorten, and the provider's limit in bytes."""
    push = push_for(notification, _SOME_DEVICE)
    too_big = [size for size in (spec.measure(push) for spec in providers()) if not size.fits]
    if not too_big or not texts:
        return
    worst = max(too_big, key=lambda size: size.size_bytes - size.limit_bytes)
    loc, text = max(texts.items(), key=lambda item: len(item[1].encode("utf-8")))
    error = PydanticCustomError(
        "push_too_large",
        "the push would be {size} UTF-8 bytes for {provider}, over its limit of {limit}"
        " bytes; this field is {field_bytes} bytes",
        {"size": worst.size_bytes, "provider": worst.provider.upper(),
         "limit": worst.limit_bytes, "field_bytes": len(text.encode("utf-8"))},
    )
    raise ValidationError.from_exception_data(
        title, [InitErrorDetails(type=error, loc=loc, input=text)], hide_input=True)
