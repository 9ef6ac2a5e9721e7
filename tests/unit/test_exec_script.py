"""The one-exec reconcile script (dataplane/render.py render_exec_script, parse.py parse_exec_output), run by
a real /bin/sh with harmless commands, and the stored form of a verified state."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from egressportal import dataplane as dp


def run(script: str) -> list[tuple[str, int, str]]:
    out = subprocess.run(dp.EXEC_ARGV, input=script, capture_output=True, text=True, timeout=10, check=True)
    return dp.parse_exec_output(out.stdout)


def reads(**argvs: list[str]) -> dict[str, dp.HostRead]:
    return {name: dp.HostRead(tuple(argv)) for name, argv in argvs.items()}


def wait_for(path: Path, lines: int, seconds: float = 5) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and len(got := path.read_text().splitlines()) >= lines:
            return got
        time.sleep(0.02)
    return path.read_text().splitlines() if path.exists() else []


def test_steps_then_reads_each_with_its_output_and_status():
    script = dp.render_exec_script(
        [(["cat"], "line one\nline 'two' $HOME `x`\n"), (["printf", "%s", "it's"], None)],
        reads(first=["printf", "a\\nb"], second=["sh", "-c", "echo oops >&2; exit 3"]),
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
        reads(state=["echo", "read"]),
    )
    assert run(script) == [("apply:0", 0, "made\n"), ("apply:1", 2, "broken\n"), ("read:state", 0, "read\n")]


def test_reads_never_consume_the_script():
    # A read command that reads stdin must get nothing, not the rest of the script.
    script = dp.render_exec_script([], reads(a=["cat"], b=["echo", "still here"]))
    assert run(script) == [("read:a", 0, ""), ("read:b", 0, "still here\n")]


def test_a_read_gets_its_own_input_and_only_it():
    # An ip batch read: its lines on stdin (a here-document, no expansion), the next read none.
    script = dp.render_exec_script(
        [], {"batch": dp.HostRead(("cat",), stdin="addr show dev eth0\n$HOME `x`\n"), "next": dp.HostRead(("cat",))}
    )
    assert run(script) == [("read:batch", 0, "addr show dev eth0\n$HOME `x`\n"), ("read:next", 0, "")]


def test_the_announcement_starts_after_the_reads_and_the_exec_does_not_wait_for_it(tmp_path):
    log = tmp_path / "log"
    script = dp.render_exec_script(
        [(["true"], None)],
        reads(a=["sh", "-c", f"echo read >> {log}"]),
        # Noisy, slow and failing: none of it reaches the answer, delays it or fails the exec.
        announce=["sh", "-c", f"echo noise; echo noise >&2; echo announce >> {log}; sleep 2; exit 7"],
    )
    started = time.monotonic()
    assert run(script) == [("apply:0", 0, ""), ("read:a", 0, "")]
    assert time.monotonic() - started < 1.5
    assert wait_for(log, 2) == ["read", "announce"]


def test_no_announcement_when_a_step_failed(tmp_path):
    log = tmp_path / "log"
    script = dp.render_exec_script(
        [(["false"], None)], reads(a=["sh", "-c", f"echo read >> {log}"]), announce=["sh", "-c", f"echo x >> {log}"]
    )
    assert run(script) == [("apply:0", 1, ""), ("read:a", 0, "")]
    time.sleep(0.5)  # time enough for a background job to write
    assert log.read_text().splitlines() == ["read"]


def test_an_announcement_that_cannot_start_fails_nothing():
    script = dp.render_exec_script([], reads(a=["echo", "x"]), announce=["/nonexistent/announce"])
    assert run(script) == [("read:a", 0, "x\n")]  # run() checks the exit status


def test_exec_results_take_only_what_the_script_writes():
    answer = "made\n\x1eapply:0 0\nbroken\n\x1eapply:1 2\nstate\n\x1eread:a 0\n"
    assert dp.exec_results(answer, steps=3) == ([(0, 0, "made"), (1, 2, "broken")], {"a": (0, "state")})
    for garbled in (
        "x\n\x1eread:a 0\ny\n\x1eread:a 0\n",  # a read twice
        "x\n\x1eread:a 0\ny\n\x1eapply:0 0\n",  # a step after the reads
        "x\n\x1eapply:1 0\n",  # a step out of order
        "x\n\x1eapply:0 0\ny\n\x1eapply:1 0\n",  # more steps than there are
        "x\n\x1eother:a 0\n",  # a section the script never writes
    ):
        with pytest.raises(dp.DataplaneParseError):
            dp.exec_results(garbled, steps=1)


def test_an_input_holding_the_delimiter_is_refused(monkeypatch):
    monkeypatch.setattr("egressportal.dataplane.render.secrets.token_hex", lambda n: "fixed")
    with pytest.raises(dp.DataplaneValueError):
        dp.render_exec_script([(["cat"], "EGRESS_EOF_fixed\nrm -rf /\n")], {})
    with pytest.raises(dp.DataplaneValueError):
        dp.render_exec_script([], {"a": dp.HostRead(("cat",), stdin="EGRESS_EOF_fixed\n")})


def test_argv_with_a_newline_is_refused():
    with pytest.raises(dp.DataplaneValueError):
        dp.render_exec_script([], reads(a=["echo", "x\ny"]))


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
