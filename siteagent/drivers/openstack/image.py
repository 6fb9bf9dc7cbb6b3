"""Images: uploaded to Glance from a file, or from bytes this site already holds, and
checked on the way in.

The marker is an image property (and the image carries the tag ``meridian``);
``meridian_sha256`` records the bytes. Every upload is hashed as it is sent: an image whose
sha256 is not the spec's, or whose Glance ``os_hash_value`` is not the sha512 of what was
sent, is deleted and the apply fails (invariant 8: nothing corrupt becomes active). An
active image with the same bytes only takes the new marker; any other one is replaced.
Downloads are checked the same way before the file is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from openstack import exceptions as os_exc

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import PREFIX as PREFIX_KEY
from siteagent.drivers.openstack_support import HashingReader, Marker, find_marker

CHUNK = 1 << 20


class Images(Owned[specs.ImageSpec]):
    kind = "image"
    spec_type = specs.ImageSpec
    long = True

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        for i in cloud.admin().image.images(name=cloud.name_of(name)):
            yield i, find_marker((i.properties or {}).get(PREFIX_KEY), i.tags)

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.ImageSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
        if old is not None and old.status == "active":
            if (old.properties or {}).get("meridian_sha256") == spec.sha256:
                conn.image.update_image(old, **{PREFIX_KEY: str(marker)})
                return conn.image.get_image(old.id)
            conn.image.delete_image(old, ignore_missing=True)
        elif old is not None:
            conn.image.delete_image(old, ignore_missing=True)
        source, held = _source(cloud, obj, spec)
        body = {
            "name": cloud.name_of(obj.name),
            "disk_format": spec.disk_format,
            "container_format": spec.container_format,
            "visibility": "private" if spec.project not in ("", "-") else "shared",
            "tags": [PREFIX_KEY],
            PREFIX_KEY: str(marker),
            "meridian_sha256": spec.sha256,
        }
        created = conn.image.post("/images", json=body)
        _raise_for(created)
        image_id = created.json()["id"]
        with contextlib.ExitStack() as stack:
            if held is None:
                stream: BinaryIO = stack.enter_context(Path(source).open("rb"))
            else:
                response = conn.image.download_image(held, stream=True)
                stack.callback(response.close)
                stream = response.raw
            reader = HashingReader(stream, spec.size, CHUNK)
            uploaded = conn.image.put(
                f"/images/{image_id}/file",
                data=reader,
                headers={"Content-Type": "application/octet-stream"},
            )
        _raise_for(uploaded)
        image = conn.image.get_image(image_id)
        problem = ""
        if reader.sha256.hexdigest() != spec.sha256:
            problem = f"sha256 of {source} is {reader.sha256.hexdigest()}, not {spec.sha256}"
        elif image.hash_algo == "sha512" and image.hash_value != reader.sha512.hexdigest():
            problem = "Glance's os_hash_value does not match the bytes sent"
        if problem:
            conn.image.delete_image(image_id, ignore_missing=True)
            raise errors.DriverError(obj.kind, obj.name, problem, temporary=False)
        return image

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().image.delete_image(found, ignore_missing=True)

    def outputs(self, found: Any) -> dict[str, str]:
        return {"id": str(found.id), "os_hash_value": str(found.hash_value or "")}

    def state(self, found: Any) -> tuple[models.ObjectState, str]:
        if found.status != "active":
            return models.ObjectState.PENDING, f"image is {found.status}"
        return models.ObjectState.READY, ""

    def download(self, cloud: Cloud, name: str, dest: Path) -> models.ObjectStatus:
        """Stream a Meridian image to ``dest``, checking its sha256 and Glance's hash."""
        image, marker = cloud.find(self.kind, name)
        if image is None or marker is None:
            raise errors.DriverError("image", name, "no such Meridian image", temporary=False)
        want = (image.properties or {}).get("meridian_sha256")
        response = cloud.admin().image.download_image(image, stream=True)
        sha256 = hashlib.sha256()
        glance = hashlib.new(image.hash_algo or "sha512")
        try:
            with dest.open("wb") as out:
                for chunk in response.iter_content(CHUNK):
                    sha256.update(chunk)
                    glance.update(chunk)
                    out.write(chunk)
        finally:
            response.close()
        if sha256.hexdigest() != want or glance.hexdigest() != image.hash_value:
            dest.unlink(missing_ok=True)
            raise errors.DriverError(
                "image", name, "downloaded bytes do not match the image's checksums", temporary=True
            )
        return self.status(name, image, marker.generation)


def _source(cloud: Cloud, obj: models.DesiredObject, spec: specs.ImageSpec) -> tuple[str, Any]:
    """Where the bytes come from: ``(path, None)`` for the spec's ``source`` file, checked
    for its size, or ``(description, image)`` for a site image holding the same bytes."""
    source = obj.spec.get("source")
    if not isinstance(source, str) or not source:
        # no file: reuse the bytes of an image this site already holds (one Meridian
        # uploaded, or replication brought), verified again on the way in
        held = _held_copy(cloud, spec)
        if held is None:
            raise errors.DriverError(
                obj.kind,
                obj.name,
                f"no source file, and no image at this site holds sha256 {spec.sha256}",
                temporary=True,
                retry_after=5.0,
            )
        return f"site image {held.id}", held
    try:
        size = Path(source).stat().st_size
    except OSError as exc:
        raise errors.InvalidSpec(
            "source", f"cannot read {source}: {exc.strerror}", kind=obj.kind, name=obj.name
        ) from exc
    if size != spec.size:
        raise errors.InvalidSpec(
            "size", f"{source} has {size} bytes, not {spec.size}", kind=obj.kind, name=obj.name
        )
    return source, None


def _held_copy(cloud: Cloud, spec: specs.ImageSpec) -> Any:
    """An active image at this site with the bytes ``spec`` names, or None."""
    for image in cloud.admin().image.images(status="active"):
        props = image.properties or {}
        if props.get("meridian_sha256") == spec.sha256 and image.size == spec.size:
            return image
    return None


def _raise_for(response: Any) -> None:
    """Raw requests go through the SDK's own error mapping, like its resource calls."""
    os_exc.raise_from_response(response)


HANDLER = Images()
