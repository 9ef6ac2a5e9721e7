"""The hard rules as pure functions of plain values: desired state (desired.py) and health evaluation
(health.py). No Django and no other project module except the dataplane (import-linter holds this), so
every rule is unit-tested without a database, a broker or a host."""
