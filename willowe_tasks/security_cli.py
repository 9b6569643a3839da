"""``python -m willowe_tasks acls`` and ``… keys``: the ACL table applied to
Kafka, and payload key rotation; every change goes into the audit trail.

Rotating a payload key without downtime (each step followed by a restart of
every web and worker process that reads the key file)::

    python -m willowe_tasks keys add k2 --file keys.txt      # k2 decrypts everywhere
    python -m willowe_tasks keys promote k2 --file keys.txt  # k2 encrypts from now on
    python -m willowe_tasks keys retire k1 --file keys.txt   # after the longest retention
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from broker.acls import AclAction, reconcile_acls
from broker.encryption import KeyRing
from willowe_tasks.acls import acl_specs, managed_principals
from willowe_tasks.audit_hooks import operator_trail
from willowe_tasks.kafka_clients import admin_client
from willowe_tasks.reconcile_report import print_report
from willowe_tasks.settings import Settings, load_settings

__all__ = ["EXIT_DRIFT", "add_parser"]

#: Exit status of ``acls --check`` when a plain run would change something.
EXIT_DRIFT = 1

#: Permission bits of a key file (owner only).
KEY_FILE_MODE = 0o600

ACLS_EPILOG = """\
exit status:
  0  the ACLs match the table (plain run: after granting and revoking)
  1  --check only: something differs that a plain run would change
  2  bad settings, Kafka unreachable or without an authorizer, or Kafka refused a change

Run it as a user allowed to manage ACLs (the local secured Kafka's admin).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acls = sub.add_parser(
        "acls", help="grant and revoke the principals' ACLs to match the table (idempotent)",
        description="Make the ACLs of the web, worker and operator principals match the "
                    "table in willowe_tasks/acls.py: grant what is missing, revoke what the "
                    "table doesn't list. Prints every difference and what was done.",
        epilog=ACLS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    acls.add_argument("--check", action="store_true",
                      help="change nothing: print what differs and exit 1 if a plain run "
                           "would change something")
    acls.set_defaults(run=acls_command)

    keys = sub.add_parser("keys", help="payload encryption keys: new, add, promote, retire",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = keys.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="print a fresh key line (id:base64) for PAYLOAD_KEYS")
    new.add_argument("key_id")
    new.set_defaults(run=_new_key)
    for name, text in (("add", "add a fresh key at the end of the file (decrypts only)"),
                       ("promote", "move a key to the front (it encrypts from now on)"),
                       ("retire", "remove a key (records sealed with it become undecryptable)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("key_id")
        action.add_argument("--file", type=Path,
                            help="the key file (default: PAYLOAD_KEYS_FILE)")
        action.set_defaults(run=_change_keys)


def acls_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    specs = acl_specs(settings)
    verb = "Checking" if args.check else "Reconciling"
    print(f"{verb} {len(specs)} ACLs of {', '.join(managed_principals(settings))} "
          f"on {settings.kafka_broker} …")
    admin = admin_client(settings)
    try:
        with operator_trail(settings) as trail:
            try:
                report = reconcile_acls(admin, specs, principals=managed_principals(settings),
                                        check=args.check)
            except Exception as e:
                trail.record("acl.reconcile", outcome="failed", error=str(e))
                raise
            for drift in report.changes if report.applied else ():
                what = "acl.grant" if drift.action is AclAction.CREATE else "acl.revoke"
                trail.record(what, acl=str(drift.acl))
    finally:
        admin.close()
    print_report(report, check=args.check,
                 no_change="every principal has exactly the table's ACLs")
    return EXIT_DRIFT if args.check and not report.in_sync else 0


def _new_key(args: argparse.Namespace) -> int:
    print(KeyRing((KeyRing.new_key(args.key_id),)).render(), end="")
    return 0


def _change_keys(args: argparse.Namespace) -> int:
    settings = load_settings()
    path = _key_file(args, settings)
    old = KeyRing.parse(path.read_text(encoding="utf-8")) if path.exists() else None
    keys = list(old.keys) if old is not None else []
    ids = [key_id for key_id, _ in keys]
    if args.action == "add":
        if args.key_id in ids:
            raise ValueError(f"{path} already has a key {args.key_id!r}")
        keys.append(KeyRing.new_key(args.key_id))
    elif args.key_id not in ids:
        raise ValueError(f"{path} has no key {args.key_id!r} (it has {', '.join(ids)})")
    elif args.action == "promote":
        keys.insert(0, keys.pop(ids.index(args.key_id)))
    elif ids[0] == args.key_id:
        raise ValueError(f"{args.key_id!r} encrypts: promote another key before retiring it")
    else:
        keys.pop(ids.index(args.key_id))
    ring = KeyRing(tuple(keys))
    _write_private(path, ring.render())
    with operator_trail(settings) as trail:
        trail.record(f"keys.{args.action}", key_id=args.key_id, file=str(path),
                     key_ids=ring.ids, encrypting=ring.primary_id)
    print(f"{path}: {args.action} {args.key_id}; keys now {', '.join(ring.ids)} "
          f"({ring.primary_id} encrypts). Restart the processes that read it.")
    return 0


def _key_file(args: argparse.Namespace, settings: Settings) -> Path:
    path: Path | None = args.file or settings.payload_keys_file
    if path is None:
        raise ValueError("name the key file with --file or PAYLOAD_KEYS_FILE")
    return path


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
