"""The one site cloud every kind handler works on: connections, projects, owned objects.

``Cloud`` holds the agent's admin connection (opened on first use from the site's own
``clouds.yaml`` / ``OS_*``) and one connection per tenant project it has acted for, and
finds Meridian's objects: by cloud name ``meridian-<site>-<name>``, owned only when they
carry the marker ``meridian:<site>/<kind>/<name>:gen=N`` (``openstack_support``). An object
with the name but not the marker belongs to someone else: finding it is a permanent error,
and it is never touched. Which objects of a kind carry the name is each handler's to say
(``Finder``); the cloud only judges ownership. Its methods block: they run inside the
driver's ``openstack_support.call``, the one error boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from siteagent import errors
from siteagent.drivers.openstack_support import (
    Marker,
    cloud_name,
    connect_as_project,
    connect_to,
    find_marker,
)

log = logging.getLogger(__name__)

Found = tuple[Any, Marker | None]
"""A cloud object with the marker it carries (None: it carries none)."""


class Finder(Protocol):
    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        """Every object of this kind named ``cloud.name_of(name)``, with its marker."""
        ...


class Cloud:
    """One OpenStack site, shared by every kind handler of the driver."""

    def __init__(
        self,
        site: str,
        cloud: str,
        *,
        timeout: float,
        finders: Mapping[str, Finder],
        connection: Any = None,
    ) -> None:
        self.site = site
        self.cloud = cloud
        self.timeout = timeout
        self._finders = finders
        self._conn: Any = connection
        self._scoped: dict[str, Any] = {}

    # -- connections -----------------------------------------------------------------------

    def admin(self) -> Any:
        """The agent's own connection (its project, its roles)."""
        if self._conn is None:
            self._conn = connect_to(self.cloud, self.timeout)
        return self._conn

    def scoped(self, project: str) -> Any:
        """A connection scoped to ``project`` (name or id); the agent's own for ``-``/empty."""
        conn = self.admin()
        if project in ("", "-") or project in (conn.current_project_id, self._own_name()):
            return conn
        if project not in self._scoped:
            # by id: a tenant is a Keystone project id, and the SDK takes a bare string for
            # a project *name*
            found = conn.identity.find_project(project, ignore_missing=True)
            ref: str | dict[str, Any] = project
            if found is not None:
                ref = {"id": found.id, "domain_id": found.domain_id}
            self._scoped[project] = connect_as_project(conn, ref)
        return self._scoped[project]

    def _own_name(self) -> str:
        auth = self.admin().config.get_auth_args()
        return str(auth.get("project_name") or "")

    def project_id(self, project: str) -> str:
        conn = self.admin()
        if project in ("", "-"):
            return str(conn.current_project_id)
        found = conn.identity.find_project(project, ignore_missing=True)
        if found is None:
            raise errors.DriverError("project", project, "no such project", temporary=False)
        return str(found.id)

    def close(self) -> None:
        conns = [self._conn, *self._scoped.values()]
        self._conn = None
        self._scoped.clear()
        for conn in conns:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing is best effort
                    log.debug("closing an OpenStack connection failed", exc_info=True)

    # -- owned objects ---------------------------------------------------------------------

    def name_of(self, name: str) -> str:
        return cloud_name(self.site, name)

    def marker(self, kind: str, name: str, generation: int) -> Marker:
        return Marker(self.site, kind, name, generation)

    def find(self, kind: str, name: str) -> Found:
        """The one object of ``kind`` named ``name`` that carries Meridian's marker."""
        found = list(self._finders[kind].candidates(self, name))
        want = self.marker(kind, name, 0)
        ours = [(obj, marker) for obj, marker in found if want.same_object(marker)]
        if len(ours) > 1:
            raise errors.DriverError(
                kind, name, f"{len(ours)} Meridian objects share one name", temporary=False
            )
        if not ours and found:
            raise errors.DriverError(
                kind,
                name,
                f"an object named {self.name_of(name)!r} exists without Meridian's "
                "marker; it is not Meridian's and is left alone",
                temporary=False,
            )
        return ours[0] if ours else (None, None)

    def require(self, who: tuple[str, str], kind: str, ref: str, *, label: str = "") -> Any:
        """The Meridian object ``ref`` that ``who`` refers to; not there yet is temporary."""
        found, _ = self.find(kind, ref)
        if found is None:
            raise missing(who, label or kind, ref)
        return found

    def resolve_id(
        self, who: tuple[str, str], kind: str, ref: str, fallback: Callable[..., Any]
    ) -> str:
        """The id of the Meridian object ``ref``, else of the cloud's own object ``ref``
        (found by ``fallback(ref, ignore_missing=True)``, as the SDK's ``find_*``)."""
        found, _ = self.find(kind, ref)
        if found is None:
            found = fallback(ref, ignore_missing=True)
        if found is None:
            raise missing(who, kind, ref)
        return str(found.id)


def missing(who: tuple[str, str], label: str, ref: str) -> errors.DriverError:
    """An object ``who`` refers to is not there (yet): retried soon."""
    return errors.DriverError(*who, f"{label} {ref!r} not found", temporary=True, retry_after=1.0)


def tagged(objects: Iterable[Any]) -> Iterator[Found]:
    """Neutron objects with their marker: Meridian's carry it as a tag and in the description."""
    for obj in objects:
        yield obj, find_marker(obj.tags, obj.description)
