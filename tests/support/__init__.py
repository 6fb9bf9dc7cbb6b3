"""Helpers that start the real components tests need (etcd, ...); not tests themselves."""
