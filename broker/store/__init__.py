"""The only code that talks to etcd.

``protocol`` defines the async ``Store`` every other broker module uses. Two real
implementations keep it over etcd -- ``etcdaio`` (grpc.aio on the event loop, the
default) and ``etcd`` (cslab-etcd3 on a small thread pool) -- sharing ``etcdwire``;
``client.open_store`` builds the one ``etcd.client`` names. ``memory`` is an in-memory
fake with the same semantics for unit tests, and ``keys`` the key schema.
"""
