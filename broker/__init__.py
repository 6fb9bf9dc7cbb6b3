"""Meridian's central broker: the global view of every site, and the one that decides.

Replicas are interchangeable: all serve the REST API and agent streams, and only the
elected leader runs controllers (DESIGN.md invariant 2). etcd is the only state
(invariant 1): every module here keeps caches at most.
"""
