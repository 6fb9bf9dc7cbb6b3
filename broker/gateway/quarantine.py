"""Sites a live drill quarantines (``isolate: site``): their streams closed and refused.

Every gateway replica follows ``drill-quarantine/`` (``store.follow``): a site named there
has its stream on this replica closed at once, with a farewell ``Refusal`` that names the
drill, and every new stream of the site is refused as unavailable (the agent logs the
reason and retries after ``RETRY_AFTER_MS``) until the drill controller deletes the key —
at the drill's end, abort or failure, or by the next leader. From the broker's side the
site is then simply lost (its health goes DOWN), which is what a lab drill wants.

Invariant: a site is refused exactly while its key exists in this replica's view, and
the view is the prefix as etcd holds it after each listing (re-listed on a broken watch).
"""

from __future__ import annotations

import json
import logging

from meridian.v1 import agent_pb2 as pb

from broker.gateway.sessions import Registry
from broker.store import follow, keys
from broker.store.protocol import Store

log = logging.getLogger(__name__)

RETRY_AFTER_MS = 1000
"""How soon a refused agent tries again: it reconnects about this long after the end."""


class Quarantines:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry
        self.sites: dict[str, str] = {}
        """Site → the drill that quarantines it."""

    def reason(self, site: str) -> str:
        """Why ``site``'s stream is refused ("" when it is not)."""
        drill = self.sites.get(site)
        if drill is None:
            return ""
        return (
            f"site {site} is quarantined by live drill {drill} (isolate: site) until the "
            f"drill ends; abort it with: meridian drill abort {drill}"
        )

    def take(self, item: follow.Item) -> None:
        if isinstance(item, follow.Listed):
            for key in follow.forgotten(item, map(keys.drill_quarantine, list(self.sites))):
                self._lift(keys.name_in(keys.DRILL_QUARANTINE, key))
            return
        key, value = follow.change(item)
        site = keys.name_in(keys.DRILL_QUARANTINE, key)
        if not value:
            self._lift(site)
            return
        try:
            drill = str(json.loads(value).get("drill", "?"))
        except ValueError:
            drill = "?"  # corrupt: quarantined all the same, the key says so
        self.sites[site] = drill
        session = self.registry.get(site)
        if session is not None:
            session.close(self.reason(site), pb.REFUSAL_UNAVAILABLE)
            log.warning("site %s: stream closed: quarantined by drill %s", site, drill)

    def _lift(self, site: str) -> None:
        if self.sites.pop(site, None) is not None:
            log.info("site %s: quarantine lifted", site)

    async def run(self) -> None:
        async for item in follow.follow(self.store, keys.DRILL_QUARANTINE):
            self.take(item)
