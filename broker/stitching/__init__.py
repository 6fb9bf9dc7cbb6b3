"""Stitched networks: global allocation (IPAM, VNIs, route targets, VLAN ids), the layout
of a network over its sites, and what the sites' gateways are told."""
