"""Push delivery to APNs (iOS) and FCM (Android).

Build a :class:`Push`, hand it to the client for the device's platform, and sort
failures by exception class (see :mod:`willowe_tasks.delivery.errors`)::

    client = APNsClient(endpoint="production", default_topic="com.willowe.app",
                        auth=TokenAuth(key_path="AuthKey.p8", key_id=..., team_id=...))
    try:
        client.send(push)
    except TokenRejected:
        registry.drop(push.token)

Both clients are thread-safe: create one of each per worker process.
"""

from willowe_tasks.delivery.apns import APNsClient
from willowe_tasks.delivery.apns_auth import CertificateAuth, TokenAuth
from willowe_tasks.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.delivery.fcm import FCMClient
from willowe_tasks.delivery.push import Push, token_ref

__all__ = [
    "APNsClient",
    "CertificateAuth",
    "DeliveryError",
    "FCMClient",
    "PermanentDeliveryError",
    "Push",
    "TokenAuth",
    "TokenRejected",
    "TransientDeliveryError",
    "token_ref",
]
