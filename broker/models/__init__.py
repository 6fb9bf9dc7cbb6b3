"""The broker's domain values: frozen dataclasses and NewType ids, with one JSON codec.

Nothing here does I/O. ``codec`` turns any of these values into the JSON stored in etcd
and back, validating on the way in.
"""
