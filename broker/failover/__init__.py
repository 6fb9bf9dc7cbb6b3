"""Geo-redundancy: what to do when a VNF's member, host or site is lost (issue 10).

``machine`` is the pure per-VNF state machine (events and a driven clock in, a new state
and actions out); ``limits`` orders and bounds the re-placements it asks for. Neither
touches the store: the failover controller feeds them and carries out their actions as
fenced desired-state writes.
"""
