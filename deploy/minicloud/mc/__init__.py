"""The minicloud tool: stdlib-only orchestration of real OpenStack services on loopback."""
