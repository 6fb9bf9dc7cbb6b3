"""Geo-redundant, hardware-aware VNF placement: nomad's pipeline over a live snapshot.

``snapshot`` keeps the federation's sites, health, inventory, claims and latency matrix
in memory, current from etcd watches; ``feasible`` checkers filter sites and hosts (each
filtered one carries its reason); ``score`` ranks what is left; ``plan`` assigns every
member a site, host and NUMA cell, solving anti-affinity for the whole group by
backtracking; ``commit`` lands the decision in one fenced etcd transaction that re-checks
every revision it planned against; ``render`` turns it into the sites' desired objects.
"""
