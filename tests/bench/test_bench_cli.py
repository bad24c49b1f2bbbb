"""`torchrig bench` against a real `torchrig serve` of the demo repository and stub servers.

Figures are never asserted, only that requests were made and the reports are well-formed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Bench = Callable[..., subprocess.CompletedProcess[str]]
BenchJson = Callable[..., dict[str, Any]]
Stub = Callable[[str], Any]
STALL_S = 0.5  # the "stall" stub server's hold (tests/bench/conftest.py)
SHORT = ("--duration", "1", "--warmup", "0.2")


def _level_ok(level: dict[str, Any]) -> None:
    assert level["requests"] > 0
    assert level["ok"] == level["requests"]
    assert level["errors"] == 0
    assert level["errors_by_status"] == {}
    assert level["requests_per_s"] > 0
    latency = level["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
    assert latency["p99"] <= latency["max"]


def test_table_has_one_row_per_concurrency_level(server_url: str, bench: Bench) -> None:
    proc = bench(server_url, "--model", "ranker", "--concurrency", "1,4", *SHORT)
    assert proc.returncode == 0, proc.stderr
    assert "ranker at " in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^│\s+\d+ │", line)]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "4"]


def test_json_binary_closed_loop(server_url: str, bench_json: BenchJson) -> None:
    document = bench_json(server_url, "--model", "ranker", "-c", "2", "--batch", "4", *SHORT)
    assert document["protocol"] == "binary"  # the server lists binary_tensor_data
    assert document["mode"] == "closed"
    assert document["rows_per_request"] == 4
    assert [i["shape"] for i in document["inputs"]] == [[4, 13], [4, 26]]
    (level,) = document["levels"]
    _level_ok(level)
    assert level["concurrency"] == 2
    assert level["rows_per_s"] == pytest.approx(4 * level["requests_per_s"], rel=1e-3)


def test_json_data_requests(server_url: str, bench_json: BenchJson) -> None:
    args = ("--model", "classifier", "--version", "1", "--json-data", "-c", "2", *SHORT)
    document = bench_json(server_url, *args)
    assert document["protocol"] == "json"
    assert document["version"] == "1"
    _level_ok(document["levels"][0])


def test_two_processes_merge_into_one_row_per_level(server_url: str, bench_json: BenchJson) -> None:
    document = bench_json(server_url, "--model", "ranker", "-c", "1,4", "--processes", "2", *SHORT)
    first, second = document["levels"]
    assert first["processes"] == 1  # one request in flight needs one process
    assert second["processes"] == 2
    assert second["connections"] == 4
    for level in (first, second):
        _level_ok(level)


def test_open_loop_counts_scheduled_late_and_dropped(
    server_url: str, bench_json: BenchJson
) -> None:
    document = bench_json(server_url, "--model", "ranker", "--rate", "40", *SHORT)
    assert document["mode"] == "open"
    (level,) = document["levels"]
    _level_ok(level)
    assert level["rate"] == 40
    assert level["arrival"] == "poisson"
    assert level["scheduled"] > 0


OPEN_LOOP_ONE_CONNECTION = (
    "--model", "echo", "--rate", "50", "--arrival", "constant", "--max-connections", "1",
    "--duration", "1", "--warmup", "0",
)  # fmt: skip


def test_a_stalling_server_is_charged_for_the_requests_it_held_back(
    bench_json: BenchJson, stub_server: Stub
) -> None:
    """Coordinated omission: the stub holds its first request STALL_S while arrivals every
    20 ms queue behind it on the one connection. Timed from their schedule, a quarter of
    the requests waited at least half the stall; timed from their send, only one would."""
    with stub_server("stall") as url:
        document = bench_json(url, *OPEN_LOOP_ONE_CONNECTION)
    (level,) = document["levels"]
    assert level["ok"] > 0
    assert level["errors"] == 0
    # the arrivals scheduled during the stall (every 20 ms for 0.5 s) were all sent late
    assert level["late"] >= 20, level
    latency = level["latency_ms"]
    assert latency["max"] >= STALL_S * 1000, latency
    assert latency["p90"] >= STALL_S * 1000 / 2, latency


def test_arrivals_never_sent_are_dropped(bench: Bench, stub_server: Stub) -> None:
    """A server that holds the one connection to the end: every later arrival is dropped,
    and the run says every request failed rather than reporting a latency."""
    with stub_server("hang") as url:
        proc = bench(url, *OPEN_LOOP_ONE_CONNECTION, "--json")
    assert proc.returncode == 1, proc.stderr
    (level,) = json.loads(proc.stdout)["levels"]
    assert level["scheduled"] >= 45, level  # 50/s for 1 s
    assert level["ok"] == 0
    assert level["dropped"] >= level["scheduled"] - 2, level  # all but the held one
    assert proc.stderr.startswith("Error: every request failed")


def test_fixed_interval_arrivals_over_two_processes(server_url: str, bench_json: BenchJson) -> None:
    args = ("--rate", "40", "--arrival", "constant", "--processes", "2", *SHORT)
    document = bench_json(server_url, "--model", "ranker", *args)
    (level,) = document["levels"]
    _level_ok(level)
    assert level["processes"] == 2
    assert level["scheduled"] == pytest.approx(40, abs=2)  # 40/s for 1 s, evenly spaced


def test_in_process_ceiling_per_batch_size(demo_repo: Path, bench: Bench) -> None:
    target = str(demo_repo / "ranker")
    proc = bench("--in-process", target, "--batch-sizes", "1,4")
    assert proc.returncode == 0, proc.stderr
    assert "in-process ceiling of ranker/1 on cpu" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^│\s+\d+ │", line)]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "4"]


def test_server_share_of_the_in_process_ceiling(
    server_url: str, demo_repo: Path, bench_json: BenchJson
) -> None:
    args = ("--in-process", str(demo_repo / "ranker"), "--batch-sizes", "1")
    document = bench_json(server_url, "--model", "ranker", "-c", "4", *args, *SHORT)
    sizes = [b["batch_size"] for b in document["in_process"]["batches"]]
    assert sizes == [1, 64]  # the server's max_batch_size is added for the ratio
    share = document["server_share"]
    assert share["batch_size"] == 64
    assert share["ratio"] == pytest.approx(
        share["server_rows_per_s"] / share["in_process_rows_per_s"], rel=1e-3
    )


def test_rejected_requests_are_counted_by_status_and_exit_1(server_url: str, bench: Bench) -> None:
    # 100 rows exceed the demo ranker's max_batch_size of 64: every request is a 400
    proc = bench(server_url, "--model", "ranker", "--batch", "100", "-c", "2", *SHORT, "--json")
    assert proc.returncode == 1
    (level,) = json.loads(proc.stdout)["levels"]
    assert level["ok"] == 0
    assert level["errors"] == level["errors_by_status"]["400"] > 0
    assert "max_batch_size" in level["error_samples"]["400"]
    assert proc.stderr.startswith("Error: every request failed at concurrency 2 (400: ")


def test_503_answers_are_counted(bench: Bench, stub_server: Stub) -> None:
    with stub_server("unavailable") as url:
        proc = bench(url, "--model", "echo", "-c", "2", *SHORT)
    assert proc.returncode == 1
    assert "503: " in proc.stdout
    assert "stub: the queue is full" in proc.stdout  # the V2 error message, unwrapped
    assert "Traceback" not in proc.stderr


def test_chunked_responses_are_read(bench_json: BenchJson, stub_server: Stub) -> None:
    with stub_server("chunked") as url:
        document = bench_json(url, "--model", "echo", "-c", "2", *SHORT)
    assert document["protocol"] == "json"  # the stub does not list binary_tensor_data
    _level_ok(document["levels"][0])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--model", "ranker", "--rate", "5", "-c", "2"), "exclude each other"),
        (("--model", "ranker", "-c", "0"), "--concurrency '0': give positive, finite numbers"),
        # NaN and infinity: a level or warm-up without end, a rate never met
        (("--model", "ranker", "--rate", "inf"), "--rate 'inf': give positive, finite numbers"),
        (("--model", "ranker", "--rate", "5,nan"), "give positive, finite numbers"),
        (("--model", "ranker", "--duration", "inf"), "--duration must be positive and finite"),
        (("--model", "ranker", "--timeout", "nan"), "--timeout must be positive and finite"),
        (("--model", "ranker", "--warmup", "inf"), "--warmup must be >= 0 and finite"),
        (("--model", "nosuch"), "model 'nosuch' is not served at"),
        (("--model", "ranker", "--shape", "dense=7"), "--shape dense=7 does not fit input"),
        (("--model", "ranker", "--shape", "bogus=1"), "its inputs are dense, sparse"),
        (("--model", "ranker", "--shape", "dense"), "write NAME=d1,d2"),
        (("--model", "ranker", "--batch-sizes", "1"), "go with --in-process"),
        ((), "--model is required"),
    ],
)
def test_bad_input_is_one_error_line(
    server_url: str, bench: Bench, args: tuple[str, ...], needle: str
) -> None:
    proc = bench(server_url, *SHORT, *args)  # (the last of a repeated option counts)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr


@pytest.mark.parametrize("kind", ["unreachable", "not_v2", "bad_url", "nothing"])
def test_unusable_targets_are_one_error_line(kind: str, bench: Bench, stub_server: Stub) -> None:
    if kind == "unreachable":
        proc = bench(f"http://127.0.0.1:{_closed_port()}", "--model", "m", *SHORT)
        needle = "cannot connect to http://127.0.0.1:"
    elif kind == "not_v2":
        with stub_server("not_v2") as url:
            proc = bench(url, "--model", "m", *SHORT)
        needle = "is not a V2 inference server"
    elif kind == "bad_url":
        proc = bench("ftp://example.com", "--model", "m", *SHORT)
        needle = "is not an http(s) URL"
    else:
        proc = bench()
        needle = "give the server's URL and --model, or --in-process"
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr
