"""DR drills (issue 11): what-if of a scope's loss and the N+1 survivability report.

Invariant 14: a drill is failover with a scope, never a second implementation of it —
the what-if runs the failover machine (``broker.failover.machine``) and the replacement
decision (``broker.failover.replace``) on the placement snapshot, and writes nothing.
"""
