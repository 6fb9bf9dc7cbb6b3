"""The northbound REST API: app factory, auth and RBAC, and the error → HTTP table.

``app.create_app`` builds the FastAPI app of one replica; ``auth`` turns tokens into
principals (dev or Keystone) and guards dev mode to loopback; ``problems`` renders every
error as RFC 9457 problem+json.
"""
