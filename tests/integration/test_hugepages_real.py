"""ONE real huge page reservation through the sysfs writer, on this machine, restored after.

Needs root (sysfs writes); a 2 MiB page on node 0 (or the global pool on a host without
NUMA nodes). Fails, never skips, when the machine does not allow it.
"""

from __future__ import annotations

import os

import pytest

from siteagent.hardware import writer

pytestmark = [pytest.mark.hugepages]
SIZE_KB = 2048


def test_one_real_huge_page_reserved_and_released() -> None:
    if os.geteuid() != 0:
        pytest.fail("reserving a huge page needs root (sysfs writes)", pytrace=False)
    sysfs = writer.SysfsWriter("/")
    node = min(sysfs.facts().nodes)
    before = sysfs.hugepages(node, SIZE_KB)
    if before is None:
        pytest.fail(f"this kernel has no {SIZE_KB} kB huge pages on node {node}", pytrace=False)
    try:
        granted = sysfs.set_hugepages(node, SIZE_KB, before.total + 1)
        assert granted == before.total + 1, "the kernel could not find 2 MiB of free memory"
        after = sysfs.hugepages(node, SIZE_KB)
        assert after is not None and after.free == before.free + 1
        view = sysfs.facts().nodes[node].hugepages[SIZE_KB]
        assert view.total == before.total + 1
    finally:
        sysfs.set_hugepages(node, SIZE_KB, before.total)
    restored = sysfs.hugepages(node, SIZE_KB)
    assert restored is not None and restored.total == before.total
    assert len(sysfs.journal) == 2
