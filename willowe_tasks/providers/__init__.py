"""Push providers: APNs (iOS) and FCM (Android), and the registry that finds
one for a device's platform (see :mod:`willowe_tasks.providers.base`).

Importing this package brings only the providers' specs; each client (libcurl
for both, pyfcm's OAuth for FCM) is imported when a worker first builds it::

    spec = provider_for("ios")            # the APNs spec
    client = spec.build(settings)         # an APNsClient, or None if unconfigured
    try:
        client.send(push)
    except TokenRejected:
        ...                               # see willowe_tasks.providers.errors

Every client is thread-safe: build one per provider per worker process.
"""

from willowe_tasks.providers.apns import APNS
from willowe_tasks.providers.base import (
    ProviderSpec,
    PushProvider,
    PushSize,
    RateLimit,
    provider_for,
    providers,
    register_provider,
)
from willowe_tasks.providers.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.providers.fcm import FCM
from willowe_tasks.providers.push import Push

for _spec in (APNS, FCM):
    register_provider(_spec)

__all__ = [
    "APNS",
    "FCM",
    "DeliveryError",
    "PermanentDeliveryError",
    "ProviderSpec",
    "Push",
    "PushProvider",
    "PushSize",
    "RateLimit",
    "TokenRejected",
    "TransientDeliveryError",
    "provider_for",
    "providers",
    "register_provider",
]
