"""Leader election: every replica serves, one decides (invariant 2), fenced (invariant 3).

``campaign`` runs the lease-and-transaction campaign for ``election/controller`` and the
leader toggle that runs controllers only while leading; ``fencing`` makes every
controller write compare the leader key's ``create_revision`` (the fence) so a deposed
leader's writes never land, and answers who leads now (``current_leader``).
"""
