"""Generated modules for Meridian wire protocol v1 (``agent.proto``), and its version.

Regenerate with ``proto/gen.sh``; a test fails when these modules are stale.
"""

MAJOR = 1
MINOR = 2
"""The newest protocol version this code speaks; see agent.proto for what each added."""
