"""Meridian's wire protocol (generated code under ``meridian.v1``)."""
