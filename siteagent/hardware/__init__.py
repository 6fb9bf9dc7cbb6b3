"""The local host's hardware, read from sysfs: NUMA cells, CPUs, huge pages, SR-IOV.

``sysfs.discover_host`` is the entry point; ``cpulist`` parses the kernel's CPU list
format. Everything reads below a configurable root so tests build a fake tree.
Discovery reports capacity only: claims by instances are the driver's business.
"""
