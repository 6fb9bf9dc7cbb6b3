"""Controllers: the leader's decisions, one concern per module.

They run only while their replica leads (``broker.election``), and every write they make
is fenced with the leader key's revision (invariant 3), so a deposed leader's decision
never lands.
"""
