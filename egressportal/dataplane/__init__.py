"""Dataplane of gateways and nodes: state model, validation, rendering (nft/ip), the commands that read a
host and parsing of their output, SSH host keys.

Pure: no Django and no other module of the project (an import-linter contract holds this), so the
portal and the workers share it and it is unit-tested without any server."""

from .model import (
    MARK_MASK,
    NFT_FAMILY,
    NFT_TABLE,
    RT_PROTO,
    TABLE_BASE,
    UNROUTED,
    GatewayState,
    NodeState,
    slot_mark,
    slot_table,
)
from .parse import (
    DataplaneParseError,
    gateway_read_commands,
    is_missing_table_error,
    node_read_commands,
    parse_gateway,
    parse_node,
    probe_echo_command,
    probe_gateway_links_command,
    probe_node_command,
    table_exists_command,
)
from .render import (
    Plan,
    ip_batch_script,
    plan_gateway,
    plan_gateway_decommission,
    plan_node,
    render_gateway_ip,
    render_gateway_nft,
    render_node_ip,
    render_node_nft,
)
from .validate import DataplaneValueError

__all__ = [
    "MARK_MASK",
    "NFT_FAMILY",
    "NFT_TABLE",
    "RT_PROTO",
    "TABLE_BASE",
    "UNROUTED",
    "DataplaneParseError",
    "DataplaneValueError",
    "GatewayState",
    "NodeState",
    "Plan",
    "gateway_read_commands",
    "ip_batch_script",
    "is_missing_table_error",
    "node_read_commands",
    "parse_gateway",
    "parse_node",
    "plan_gateway",
    "plan_gateway_decommission",
    "plan_node",
    "probe_echo_command",
    "probe_gateway_links_command",
    "probe_node_command",
    "render_gateway_ip",
    "render_gateway_nft",
    "render_node_ip",
    "render_node_nft",
    "slot_mark",
    "slot_table",
    "table_exists_command",
]
