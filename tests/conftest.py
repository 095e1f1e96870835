"""Fixtures shared by the test files: a throw-away PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres_user(command: list[str]) -> list[str]:
    """``command`` as the user ``postgres`` when we are root: initdb refuses to run as root."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user for initdb")
    return [runuser, "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A PostgreSQL server of its own (initdb in a temporary folder, 127.0.0.1, a free port)
    with an empty database; its URL. Stopped and deleted at the end of the session."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (.ci/run installs them)")
    folder = Path(tempfile.mkdtemp(prefix="trainlab-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust"]), **run
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = [pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
    subprocess.run(_as_postgres_user(start), **run)
    try:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE sweeps")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        stop = [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres_user(stop), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def pinned_optimizer_costs(tmp_path_factory) -> Iterator[None]:
    """``backend="auto"`` decides by costs measured on the machine; the tests pin them.

    A calibration file written here (and named by ``TRAINLAB_CALIBRATION``, which test
    subprocesses inherit) pins one cost model (its "*" entry) for every optimizer, device,
    dtype and thread count (fused from about 18 tensors or 2 million parameters), so which
    path a test's default optimizer takes does not depend on this machine's speed.
    tests/optim/test_calibration.py measures for real.
    """
    import json

    import torch

    from trainlab.optim import calibration

    model = dict(
        eager_us=0.0,
        eager_us_per_tensor=7.0,
        eager_us_per_element=0.00055,
        fused_us=120.0,
        fused_us_per_element=0.0005,
        compile_s=0.0,
    )
    entries = {calibration.OVERRIDE: model}
    path = tmp_path_factory.mktemp("calibration") / "costs.json"
    machine = calibration.machine_key(torch.device("cpu"))
    path.write_text(
        json.dumps({"version": calibration.VERSION, "machine": machine, "entries": entries})
    )
    saved = os.environ.get("TRAINLAB_CALIBRATION")
    os.environ["TRAINLAB_CALIBRATION"] = str(path)
    yield
    if saved is None:
        os.environ.pop("TRAINLAB_CALIBRATION", None)
    else:
        os.environ["TRAINLAB_CALIBRATION"] = saved
