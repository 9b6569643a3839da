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
They refuse what the providers document as refused, with the providers' own
answers (each limit cites its document where the fake enforces it):

- FCM (:mod:`._fcm_messages`): ``android.ttl`` up to 2,419,200 s; 4096 bytes of
  keys and values of data and notification (2048 to a topic); reserved data keys
  (``from``, ``message_type``, ``google*``, ``gcm*``); field types of
  ``AndroidNotification``; image URLs. All ``400 INVALID_ARGUMENT`` naming the field.
- APNs (:mod:`._apns_payload`): 4096 bytes (5120 for VoIP); the types of the
  ``aps`` keys; background pushes with ``content-available: 1``, priority 5 and
  nothing to show; the topic each push type needs; ``apns-collapse-id`` up to 64 bytes.

Tokens and where they are good::

    apns.register_token(token, environment="sandbox")
    # ... pushed through apns.production_url: 400 BadDeviceToken
    apns.register_token(token, bundle_id="com.other")  # 400 DeviceTokenNotForTopic
    apns.unregister(token)  # 410 Unregistered with a timestamp (ms); register again: live
    fcm.add_project("other-project")  # with a service account of its own
    fcm.register_token(token)  # sent by other-project: 403 SENDER_ID_MISMATCH

Phones: every accepted push reaches the phone of its token, which shows it
unless a later one with the same ``android.notification.tag`` /
``apns-collapse-id`` replaced it on screen. An offline phone's pushes wait under
the provider's rules (FCM: the latest message of at most four collapse keys, up
to 100 non-collapsible ones, ttl; APNs: the latest one per app, expiration, 30
days at most), judged by the fake's ``clock``::

    fcm.set_offline(token)
    ...                                   # the worker sends six notifications
    arrived = fcm.set_online(token)       # what FCM hands over
    assert len(fcm.phone(token).shown) == 4

Needs the ``testing`` extra (hypercorn, trustme).
"""

from willowe_tasks.testing._fake import FakeProvider
from willowe_tasks.testing._phones import Phone
from willowe_tasks.testing._records import ReceivedRequest
from willowe_tasks.testing.fake_apns import FakeAPNs
from willowe_tasks.testing.fake_fcm import FakeFCM
from willowe_tasks.testing.worker_env import fake_provider_env, worker_command

__all__ = ["FakeAPNs", "FakeFCM", "FakeProvider", "Phone", "ReceivedRequest",
           "fake_provider_env", "worker_command"]
