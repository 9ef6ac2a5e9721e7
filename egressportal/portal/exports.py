"""The address list as rows for CSV and JSON: the same fields in the portal's
export and in the API (egressportal/api)."""

from __future__ import annotations

from typing import Any

from egressportal.core.audit import safe_cell
from egressportal.core.selectors import ADDRESS_STATES, AddressRow

__all__ = ["ADDRESS_FIELDS", "address_row_dict", "csv_safe"]

ADDRESS_FIELDS = ["address", "address6", "app", "app_id", "region", "role", "state", "state_label", "gateway", "reserved_until"]


def address_row_dict(row: AddressRow) -> dict[str, Any]:
    return {
        "address": row.address,
        "address6": row.address6,
        "app": row.app_name,
        "app_id": row.app_id,
        "region": row.region,
        "role": row.role or None,
        "state": row.state,
        "state_label": ADDRESS_STATES.get(row.state, row.state),
        "gateway": row.gateway or None,
        "reserved_until": row.reserved_until.isoformat() if row.reserved_until else None,
    }


def csv_safe(value: Any) -> Any:
    return "" if value is None else safe_cell(value)
