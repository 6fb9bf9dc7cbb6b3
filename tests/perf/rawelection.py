"""The failover floor: etcd's lease + txn election recipe with nothing of Meridian around it.

``python -m tests.perf.rawelection --endpoint H:P --key K --name N --ttl 2`` campaigns
for ``K`` the way ``broker.election.campaign`` does, with the raw cslab-etcd3 client:
grant a lease of ``ttl`` seconds and refresh it every ttl/3; create the key with it in a
transaction guarded by ``create_revision == 0``; a loser watches the key from the
revision it read and tries again the moment the key is deleted (a killed holder's lease
expiring). No asyncio, no store layer, no controllers: what is left is etcd's own time.

stdout: one JSON line per state change, ``{"state": "leading"|"following", "t": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import etcd3
import etcd3.events as etcd_events


def emit(**fields: Any) -> None:
    print(json.dumps({**fields, "t": time.time()}), flush=True)


def keep_alive(lease: Any, ttl: int) -> None:
    while True:
        time.sleep(ttl / 3)
        try:
            lease.refresh()
        except Exception as exc:
            emit(state="lost", error=str(exc))
            sys.exit(1)


def campaign(client: Any, key: str, name: str, ttl: int) -> None:
    lease = client.lease(ttl)
    threading.Thread(target=keep_alive, args=(lease, ttl), daemon=True).start()
    txn = client.transactions
    while True:
        won, responses = client.transaction(
            compare=[txn.create(key) == 0],
            success=[txn.put(key, name, lease)],
            failure=[txn.get(key)],
        )
        if won:
            emit(state="leading", name=name)
            threading.Event().wait()  # hold until killed
        held = responses[0]
        start = held[0][1].mod_revision + 1 if held else 0
        events, cancel = client.watch(key, start_revision=start) if start else ([], None)
        emit(state="following", name=name)
        for event in events:
            if isinstance(event, etcd_events.DeleteEvent):
                break
        if cancel is not None:
            cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="etcd host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--ca", default="", help="etcd's CA (TLS); with --cert and --key")
    parser.add_argument("--cert", default="")
    parser.add_argument("--key-file", "--key-pem", dest="key_file", default="")
    args = parser.parse_args()
    host, _, port = args.endpoint.rpartition(":")
    tls = {"ca_cert": args.ca, "cert_cert": args.cert, "cert_key": args.key_file}
    client = etcd3.client(host=host, port=int(port), timeout=5, **(tls if args.ca else {}))
    campaign(client, args.key, args.name, args.ttl)


if __name__ == "__main__":
    main()
