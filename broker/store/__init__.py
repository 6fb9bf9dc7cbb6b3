"""The only code that talks to etcd.

``protocol`` defines the async ``Store`` every other broker module uses; ``etcd`` is the
real implementation (cslab-etcd3 on a small thread pool), ``memory`` an in-memory fake
with the same semantics for unit tests, and ``keys`` the key schema.
"""
