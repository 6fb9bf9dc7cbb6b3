"""What a kind handler is: ``Handler``, and ``Owned``, the shape most kinds share.

A handler converges, observes and deletes the objects of one kind on a ``cloud.Cloud``;
``kinds.HANDLERS`` maps each kind to its handler. ``Owned`` is the common case: an object
found by cloud name and marker (invariant 4: applying a generation not newer than the one
its marker carries changes nothing and reports the object as it is), made or updated by
the kind's ``converge``, removed by its ``remove``. A delete of an object already gone —
before or while it is deleted — succeeds.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from openstack import exceptions as os_exc

from siteagent import models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack_support import Marker, not_found

S = TypeVar("S", bound=specs.Spec)


class Handler(Protocol):
    """One kind of object on an OpenStack site."""

    kind: ClassVar[str]
    long: ClassVar[bool]
    """Applying may move image bytes: the driver allows it the image deadline."""

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]: ...

    def apply(
        self, cloud: Cloud, obj: models.DesiredObject, spec: specs.Spec
    ) -> models.ObjectStatus: ...

    def observe(self, cloud: Cloud, name: str) -> models.ObjectStatus | None: ...

    def delete(self, cloud: Cloud, name: str) -> models.ObjectStatus: ...


class Owned(abc.ABC, Generic[S]):
    """A kind whose objects carry Meridian's marker; subclasses fill in the hooks."""

    kind: ClassVar[str]
    spec_type: ClassVar[type[Any]]
    long: ClassVar[bool] = False

    # -- hooks -----------------------------------------------------------------------------

    @abc.abstractmethod
    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        """Every object of this kind named ``cloud.name_of(name)``, with its marker."""

    @abc.abstractmethod
    def converge(
        self, cloud: Cloud, obj: models.DesiredObject, spec: S, marker: Marker, old: Any
    ) -> Any:
        """Make the object (``old`` is None) or bring ``old`` to ``spec``; returns it."""

    @abc.abstractmethod
    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        """Delete ``found``, which is Meridian's."""

    def outputs(self, found: Any) -> dict[str, str]:
        return {"id": str(found.id)}

    def state(self, found: Any) -> tuple[models.ObjectState, str]:
        return models.ObjectState.READY, ""

    # -- Handler ---------------------------------------------------------------------------

    def apply(
        self, cloud: Cloud, obj: models.DesiredObject, spec: specs.Spec
    ) -> models.ObjectStatus:
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"{self.kind} handler given a {type(spec).__name__}")
        existing, old = cloud.find(obj.kind, obj.name)
        if existing is not None and old is not None and old.generation >= obj.generation:
            return self.status(obj.name, existing, obj.generation)
        marker = cloud.marker(obj.kind, obj.name, obj.generation)
        result = self.converge(cloud, obj, spec, marker, existing)
        return self.status(obj.name, result, obj.generation)

    def observe(self, cloud: Cloud, name: str) -> models.ObjectStatus | None:
        found, marker = cloud.find(self.kind, name)
        if found is None or marker is None:
            return None
        return self.status(name, found, marker.generation)

    def delete(self, cloud: Cloud, name: str) -> models.ObjectStatus:
        found, marker = cloud.find(self.kind, name)
        if found is not None:
            try:
                self.remove(cloud, name, found)
            except os_exc.HttpException as exc:
                if not not_found(exc):
                    raise
        generation = marker.generation if marker is not None else 0
        return models.ObjectStatus(self.kind, name, generation, models.ObjectState.DELETED)

    def status(self, name: str, found: Any, generation: int) -> models.ObjectStatus:
        state, message = self.state(found)
        return models.ObjectStatus(
            self.kind, name, generation, state, message, outputs=self.outputs(found)
        )
