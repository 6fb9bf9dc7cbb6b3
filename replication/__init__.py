"""Image replication between sites: catalog, replica states, policies, relay planner,
chunked verified transfer.

Pure logic plus Protocols (``transfer.ByteSource`` / ``transfer.ByteSink``); the broker
and the site agent plug in the real byte stores and the wire. This package imports
neither ``broker`` nor ``siteagent``. Invariant 8 (nothing corrupt is activated) is kept
here: a replica reaches ``active`` only through ``verifying`` with the whole-image digest
matching the catalog.
"""
