"""Local fakes of APNs and FCM that speak the real protocols, for tests and demos.

Each fake serves HTTPS on ``127.0.0.1`` (a free port) from a background thread,
with a CA made on the fly; everything a client needs is a string or a file path,
so clients in other processes can use a fake too::

    with FakeAPNs() as apns:
        client = APNsClient(
            endpoint=apns.url,
            default_topic=apns.bundle_id,
            ca_file=apns.ca_file,
            auth=TokenAuth(key_path=apns.signing_key_path,
                           key_id=apns.key_id, team_id=apns.team_id),
        )
        client.send(push)
        [request] = apns.wait_for(1)

    with FakeFCM() as fcm:
        client = FCMClient(project_id=fcm.project_id, endpoint=fcm.url,
                           ca_file=fcm.ca_file,
                           service_account_info=fcm.service_account_info())

Both record what they received (:attr:`~FakeProvider.received`), can be told to
fail (:meth:`~FakeProvider.fail`) and can add a fixed latency per request
(:attr:`~FakeProvider.latency_s`) without serialising concurrent requests.
Needs the ``testing`` extra (hypercorn, trustme).
"""

from willowe_tasks.testing._fake import FakeProvider
from willowe_tasks.testing._records import ReceivedRequest
from willowe_tasks.testing.fake_apns import FakeAPNs
from willowe_tasks.testing.fake_fcm import FakeFCM
from willowe_tasks.testing.worker_env import fake_provider_env, worker_command

__all__ = ["FakeAPNs", "FakeFCM", "FakeProvider", "ReceivedRequest", "fake_provider_env",
           "worker_command"]
