"""Registers one "Open vSwitch agent" per given host with a site's Neutron.

Runs with the services venv's python: ``ovs_agents.py --config-file neutron.conf
--config-file ml2_conf.ini HOST...``. There is no real agent (no OVS, no data plane): a
single state report over Neutron's own RPC API (``PluginReportStateAPI`` on topic
``q-reports-plugin``) records the agent, and with ``agent_down_time = 86400`` it stays
"alive" for a day, so ML2's openvswitch mechanism driver binds ports on those hosts.
The report is a blocking RPC call: it also proves that neutron-rpc-server is consuming.
"""

from __future__ import annotations

import sys
import time

from neutron.agent import rpc as agent_rpc
from neutron.api.rpc.callbacks import resources
from neutron.common import config as common_config
from neutron.conf.agent import common as agent_conf
from neutron_lib import constants
from neutron_lib import context as n_context
from neutron_lib import rpc as n_rpc
from neutron_lib.agent import topics
from oslo_config import cfg
import oslo_messaging


def agent_state(host: str) -> dict:
    return {
        "binary": constants.AGENT_PROCESS_OVS,
        "host": host,
        "topic": constants.L2_AGENT_TOPIC,
        "agent_type": constants.AGENT_TYPE_OVS,
        "start_flag": True,
        "resource_versions": resources.LOCAL_RESOURCE_VERSIONS,
        "configurations": {
            "bridge_mappings": {"public": "br-ex", "physnet1": "br-physnet1"},
            "tunnel_types": ["vxlan"],
            "tunneling_ip": "127.0.0.1",
            "integration_bridge": "br-int",
            "datapath_type": "system",
            "ovs_capabilities": {"datapath_types": ["system"], "iface_types": ["internal"]},
            "ovs_hybrid_plug": False,
            "l2_population": False,
            "arp_responder_enabled": False,
            "enable_distributed_routing": False,
            "extensions": [],
            "devices": 0,
            "minicloud": "registered by deploy/minicloud; no real agent runs",
        },
    }


def main() -> int:
    args = sys.argv[1:]
    hosts = [a for a in args if not a.startswith("--config-file")]
    conf_args = [a for a in args if a.startswith("--config-file")]
    common_config.register_common_config_options()
    agent_conf.register_agent_state_opts_helper(cfg.CONF)
    cfg.CONF(conf_args, project="neutron")
    n_rpc.init(cfg.CONF)
    api = agent_rpc.PluginReportStateAPI(topics.REPORTS)
    api.timeout = 20
    ctx = n_context.get_admin_context_without_session()
    deadline = time.monotonic() + 120
    for host in hosts:
        while True:
            try:
                status = api.report_state(ctx, agent_state(host), use_call=True)
                print(f"{host}: Open vSwitch agent reported ({status})", flush=True)
                break
            except oslo_messaging.MessagingTimeout:
                if time.monotonic() > deadline:
                    print(f"{host}: no answer from neutron-rpc-server", flush=True)
                    return 1
                print(f"{host}: neutron-rpc-server not answering yet, retrying", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
