"""Clients torchrig does not ship, as their users run them, against a real server: the
ones that offer a cleartext HTTP/2 upgrade (`Upgrade: h2c`) on every request. The JDK's
HttpClient does so by default (HTTP_2 is its default version), and so does `curl --http2`;
each needs the request answered as HTTP/1.1 with its body read. The raw-socket twins of
these, which need no outside tool, are in test_hardening.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import running
from torchrig.settings import ServeSettings

REQUEST = {
    "inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13},
        {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": list(range(26))},
    ]
}

JAVA_CLIENT = """
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;

public class V2Post {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        String body = Files.readString(Path.of(args[1]));
        for (int i = 0; i < 2; i++) {  // the second on the connection the first opened
            HttpRequest request = HttpRequest.newBuilder(URI.create(args[0]))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body)).build();
            HttpResponse<String> response =
                client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + " " + response.body());
        }
    }
}
"""


@pytest.fixture(scope="module")
def served(demo_repo: Path) -> Iterator[str]:
    with running(demo_repo, ServeSettings(port=0, log_format="text")) as (url, _):
        yield url


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here; test_hardening.py sends its bytes raw")
    return found


def assert_answered(line: str) -> None:
    status, _, body = line.partition(" ")
    assert status == "200", line
    assert json.loads(body)["outputs"][0]["name"] == "probability"


def test_the_jdk_http_client_gets_answers(served: str, tmp_path: Path) -> None:
    java = tool("java")
    (tmp_path / "V2Post.java").write_text(JAVA_CLIENT)
    (tmp_path / "request.json").write_text(json.dumps(REQUEST))
    run = subprocess.run(
        [java, "V2Post.java", f"{served}/v2/models/ranker/infer", "request.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2, run.stdout
    for line in lines:
        assert_answered(line)


def test_curl_offering_http2_gets_answers(served: str) -> None:
    curl = tool("curl")
    run = subprocess.run(
        [
            curl,
            "-sS",
            "--http2",  # on http:// this offers the h2c upgrade
            "-H",
            "content-type: application/json",
            "--data-binary",
            json.dumps(REQUEST),
            "-w",
            "\n%{http_code}",
            f"{served}/v2/models/ranker/infer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    body, _, code = run.stdout.rpartition("\n")
    assert_answered(f"{code} {body}")
