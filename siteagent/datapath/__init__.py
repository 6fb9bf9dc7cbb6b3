"""The data path of the agent's host: the site's profile, applied, watched and reported.

``profile`` is the declared shape (huge pages, SR-IOV VFs, OVS bridges and switch
configuration, CPU roles); ``check`` refuses what the host cannot do before anything is
written; ``ovs`` drives Open vSwitch through ``ovsdbapp``, touching only what Meridian
owns; ``manager`` applies in order (huge pages, VFs, OVS), finds drift and describes the
result for the inventory; ``driver`` adds the ``datapath`` kind to the site's driver and
``setup`` builds it from the settings. sysfs writes live in ``siteagent.hardware.writer``.
Stitching gateways (VXLAN toward peer sites) live beside them in this package.
"""
