"""The site's drift audit: what it reports for an image whose file is still being put in
place (busy, not judged) beside the images whose bytes it hashed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from replication import errors
from replication.catalog import ImageId
from siteagent.imagewire import ImageAgent, SiteDir


class Writing(SiteDir):
    """A site directory whose ``img-new`` is being written while it is audited."""

    async def digest(self, image: ImageId) -> tuple[str, int]:
        if image == "img-new":
            raise errors.ImageChanging(image)
        return await super().digest(image)


async def test_an_image_being_written_is_reported_busy_and_the_rest_with_digests(
    tmp_path: Path,
) -> None:
    (tmp_path / "img-old.img").write_bytes(b"settled bytes")
    (tmp_path / "img-new.img").write_bytes(b"the first half")
    report = await ImageAgent([], Writing(tmp_path)).audit()
    states = {r.image_id: (r.state, r.sha256) for r in report.replicas}
    assert report.audit
    assert states == {
        "img-old": ("active", hashlib.sha256(b"settled bytes").hexdigest()),
        "img-new": ("busy", ""),
    }
