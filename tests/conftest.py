"""Shared fixtures: one real local Ray per test session (2 CPUs, like the smallest machine) and ../shared data."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def start_server(argv: list[str], what: str, env: dict | None = None):
    """``argv`` with ``{port}`` filled by a free loopback port, started: ``(process, url, log file)``,
    once it listens (RuntimeError naming the log when it does not within a minute)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"facepipe-{what}-{port}.log", "wb")
    proc = subprocess.Popen([a.format(port=port) for a in argv], stdout=log, stderr=log, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:  # not listening yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {what} test server did not start (see {log.name})") from None
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", log


def start_moto(env: dict | None = None):
    """moto's S3 server on a free loopback port: ``(process, url, log file)``, once it answers."""
    return start_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"], "moto", env)


def stop_moto(proc, log) -> None:
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto's server mode) on loopback for the whole session, reached as
    any user's S3 is: through ``AWS_ENDPOINT_URL`` and the ``AWS_*`` credentials in the environment
    (set here before Ray starts, so its workers and the CLI's subprocesses inherit them)."""
    pytest.importorskip("moto", reason="moto[server] (a dev dependency) is not installed")
    proc, url, log = start_moto()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="facepipe-test", AWS_SECRET_ACCESS_KEY="facepipe-test",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    yield boto3.client("s3")
    stop_moto(proc, log)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server) -> str:
    """A new, empty bucket on the session's S3 server, as ``s3://<name>``."""
    name = f"facepipe-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS-protocol server (gcp-storage-emulator, a dev dependency) on loopback for the session,
    reached as the Google client libraries reach an emulator: ``STORAGE_EMULATOR_HOST``. Yields a
    function that creates a bucket and returns its ``gs://`` URI."""
    import json
    import shutil
    import urllib.request

    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or shutil.which("gcp-storage-emulator")
    if exe is None:
        pytest.skip("gcp-storage-emulator (a dev dependency) is not installed")
    proc, url, log = start_server([exe, "start", "--host", "127.0.0.1", "--port", "{port}", "--in-memory"], "gcs")
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url

    def new_bucket() -> str:
        name = f"facepipe-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(f"{url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()
        return f"gs://{name}"

    yield new_bucket
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture(scope="session")
def ray_session(request):
    """A real local Ray with 2 CPUs, started once for the whole session (after the S3 server when
    one is available, so that its workers inherit the server's address)."""
    from facepipe.runtime import init_ray

    try:
        import moto  # noqa: F401

        request.getfixturevalue("s3_server")
    except ImportError:
        pass

    import ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path
