"""The one-exec reconcile script (dataplane/render.py render_exec_script, parse.py parse_exec_output), run by
a real /bin/sh with harmless commands, and the stored form of a verified state."""

from __future__ import annotations

import subprocess

import pytest

from egressportal import dataplane as dp


def run(script: str) -> list[tuple[str, int, str]]:
    out = subprocess.run(dp.EXEC_ARGV, input=script, capture_output=True, text=True, timeout=10, check=True)
    return dp.parse_exec_output(out.stdout)


def test_steps_then_reads_each_with_its_output_and_status():
    script = dp.render_exec_script(
        [(["cat"], "line one\nline 'two' $HOME `x`\n"), (["printf", "%s", "it's"], None)],
        {"first": ["printf", "a\\nb"], "second": ["sh", "-c", "echo oops >&2; exit 3"]},
    )
    assert run(script) == [
        ("apply:0", 0, "line one\nline 'two' $HOME `x`\n"),  # stdin verbatim: no expansion
        ("apply:1", 0, "it's"),
        ("read:first", 0, "a\nb"),
        ("read:second", 3, "oops\n"),
    ]


def test_a_failed_step_stops_the_later_steps_but_the_host_is_still_read():
    script = dp.render_exec_script(
        [(["cat"], "made\n"), (["sh", "-c", "cat >/dev/null; echo broken; exit 2"], "x\n"), (["cat"], "break\n")],
        {"state": ["echo", "read"]},
    )
    assert run(script) == [("apply:0", 0, "made\n"), ("apply:1", 2, "broken\n"), ("read:state", 0, "read\n")]


def test_reads_never_consume_the_script():
    # A read command that reads stdin must get nothing, not the rest of the script.
    script = dp.render_exec_script([], {"a": ["cat"], "b": ["echo", "still here"]})
    assert run(script) == [("read:a", 0, ""), ("read:b", 0, "still here\n")]


def test_an_input_holding_the_delimiter_is_refused(monkeypatch):
    monkeypatch.setattr("egressportal.dataplane.render.secrets.token_hex", lambda n: "fixed")
    with pytest.raises(dp.DataplaneValueError):
        dp.render_exec_script([(["cat"], "EGRESS_EOF_fixed\nrm -rf /\n")], {})


def test_argv_with_a_newline_is_refused():
    with pytest.raises(dp.DataplaneValueError):
        dp.render_exec_script([], {"a": ["echo", "x\ny"]})


def test_a_garbled_answer_is_a_parse_error():
    with pytest.raises(dp.DataplaneParseError):
        dp.parse_exec_output("no sections at all")
    with pytest.raises(dp.DataplaneParseError):
        dp.parse_exec_output("x\n\x1eread:a notanumber\n")


def test_states_round_trip_through_their_stored_form():
    gw = dp.GatewayState.build(
        public_interface="eth1",
        addresses=["203.0.113.130", "203.0.113.131"],
        snat={"198.18.64.16/28": "203.0.113.130"},
        return_routes={"198.18.64.0/24": "198.18.100.21"},
        guarded_sources=["198.18.64.0/24"],
    )
    node = dp.NodeState.build(
        steering={"198.18.64.16/28": 2}, gateways={2: "198.18.100.12"}, internal=["198.18.64.0/24"]
    )
    for state in (gw, node):
        assert dp.state_from_doc(dp.state_to_doc(state)) == state


def test_a_stored_state_is_validated_like_any_other():
    doc = dp.state_to_doc(dp.NodeState.build(steering={"198.18.64.16/28": 2}, gateways={2: "198.18.100.12"}))
    doc["gateways"] = []  # steering to a slot without a gateway
    with pytest.raises(dp.DataplaneValueError):
        dp.state_from_doc(doc)
    with pytest.raises(dp.DataplaneValueError):
        dp.state_from_doc({"kind": "router"})
