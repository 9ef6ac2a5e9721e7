"""Structured logs: the JSON formatter, context fields and secret scrubbing (pure)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from egressportal.ops import logs

PRIVATE_KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDjKqp5Fc65tEnRulDqKCy7Gm4B+QvaJFotHYdpfRiiZQAAAJgAAAAA
-----END OPENSSH PRIVATE KEY-----"""


def make_logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(logs.ContextFilter())
    handler.addFilter(logs.SecretScrubFilter())
    logger = logging.getLogger(f"tests.ops.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_formatter_writes_one_object_per_line_with_context_and_extras():
    logger, stream = make_logger(logs.JsonFormatter())
    with logs.log_context(request_id="req-1", app_id=42, host="gw1", task_id="t-9"):
        logger.info("reconciled %s in %d ms", "gw1", 12, extra={"changes": ["add 203.0.113.5"]})
    logger.warning("outside")
    first, second = lines(stream)
    assert first["msg"] == "reconciled gw1 in 12 ms"
    assert first["level"] == "INFO" and first["logger"].startswith("tests.ops.")
    assert (first["request_id"], first["app_id"], first["host"], first["task_id"]) == ("req-1", 42, "gw1", "t-9")
    assert first["changes"] == ["add 203.0.113.5"]
    assert first["ts"].endswith("+00:00")
    assert "request_id" not in second and "host" not in second


def test_json_formatter_keeps_multiline_exceptions_on_one_line_and_scrubbed():
    logger, stream = make_logger(logs.JsonFormatter())
    try:
        raise ValueError("connecting to redis://:hunter2@broker:6379/0 failed")
    except ValueError:
        logger.exception("broker down")
    (entry,) = lines(stream)
    assert "Traceback" in entry["exc"] and "ValueError" in entry["exc"]
    assert "hunter2" not in stream.getvalue()
    assert len(stream.getvalue().strip().splitlines()) == 1


def test_plain_formatter_appends_context():
    logger, stream = make_logger(logs.PlainFormatter())
    with logs.log_context(host="node1", task_id="abc"):
        logger.info("hello")
    assert stream.getvalue().rstrip().endswith("hello [host=node1 task_id=abc]")


def test_logged_with_binds_a_keyword_argument_for_the_call_only():
    seen = []

    @logs.logged_with(app_id="app_id")
    def settle(*, app_id: int) -> None:
        seen.append(logs.current().get("app_id"))

    settle(app_id=7)
    assert seen == [7]
    assert "app_id" not in logs.current()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login failed password=hunter2 for bob", "hunter2"),
        ("{'username': 'bob', 'password': 'hunter2'}", "hunter2"),
        ('{"token": "0123456789abcdef0123456789abcdef"}', "0123456789abcdef"),
        ("METRICS_TOKEN=s3cr3t-value", "s3cr3t-value"),
        ("api_key: AKIAEXAMPLE123", "AKIAEXAMPLE123"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("{'HTTP_AUTHORIZATION': 'Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b'}", "9944b09199c62bcf"),
        ("header authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("retrying with Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("DATABASE_URL postgres://egress:pa55word@db:5432/egress", "pa55word"),
        (f"loaded key\n{PRIVATE_KEY}\ndone", "b3BlbnNzaC1rZXktdjEA"),
        ("truncated -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "MIIEowIBAAKCAQEA"),
    ],
)
def test_scrub_removes_secrets(text, secret):
    clean = logs.scrub(text)
    assert secret not in clean
    assert "REDACTED" in clean


@pytest.mark.parametrize(
    "text",
    [
        "reconcile of gateway gw1 failed: nft exited 1",
        "Task workers.tasks.reconcile_host[4f1c] succeeded in 0.2s",
        "app shop-api assigned 203.0.113.5 on gw1",
        "GET /api/v1/apps/ 200",
    ],
)
def test_scrub_leaves_ordinary_lines_alone(text):
    assert logs.scrub(text) == text


def test_filter_scrubs_arguments_before_any_handler_formats_them():
    logger, stream = make_logger(logging.Formatter("%(message)s"))
    logger.warning("user %s set password=%s with %s", "bob", "hunter2", {"Authorization": "Bearer tok-abcdefghijklmnop"})
    out = stream.getvalue()
    assert "hunter2" not in out and "tok-abcdefghijklmnop" not in out
    assert "user bob set password=[REDACTED]" in out


def test_settings_use_json_lines_when_debug_is_off(settings):
    assert settings.DEBUG is False
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"
    assert {"context", "scrub"} <= set(settings.LOGGING["handlers"]["console"]["filters"])
