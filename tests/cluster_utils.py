"""Helpers for the tests that run dask_rec on real scheduler and worker processes.

The clusters are started and stopped with ``cluster/start-local-cluster.sh`` (the same script a
user runs), on 127.0.0.1 with ports the OS picks; the ``dask-rec`` commands run as subprocesses.
Everything has a deadline, and whatever a test starts is killed when it ends, pass or fail:
:class:`ProcessCluster` stops its processes (their process groups, SIGKILL as a last resort) and
:func:`start_cli`/:func:`kill_tree` do the same for a command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
START_SCRIPT = CLUSTER / "start-local-cluster.sh"
MAKE_CERTS = CLUSTER / "tls" / "make-certs.sh"
ML100K = REPO.parent / "shared" / "datasets" / "ml-100k" / "interactions.parquet"

#: Seconds a cluster may take to start (scheduler + workers, each importing dask on 2 busy cores).
START_TIMEOUT = 90
#: Seconds any single ``dask-rec`` command may take in these tests.
CLI_TIMEOUT = 180


def require_posix_tools() -> None:
    """Skip unless bash (and a POSIX process model) is available."""
    if os.name != "posix" or shutil.which("bash") is None:
        pytest.skip("the cluster tests need bash and POSIX processes")


def ml100k_path() -> Path:
    if not ML100K.exists():
        pytest.skip(f"shared dataset ml-100k not found at {ML100K} (clone the project with ../shared beside it)")
    return ML100K


def _bin(name: str) -> str | None:
    """``name`` beside this Python (the venv's console scripts), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def dask_rec_command() -> list[str]:
    exe = _bin("dask-rec")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from dask_rec.cli import main; sys.exit(main())"]


def subprocess_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


# ------------------------------------------------------------------------------------ processes

def kill_tree(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Signal the process group of ``proc`` (started with ``start_new_session``) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run_cli(*args, cwd, timeout: float = CLI_TIMEOUT, check: bool = True, env: dict | None = None):
    """Run ``dask-rec ARGS`` to completion (killed after ``timeout``); returns the CompletedProcess."""
    cmd = [*dask_rec_command(), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(f"`dask-rec {' '.join(map(str, args))}` did not finish in {timeout} s\n"
                    f"stdout:\n{out}\nstderr (tail):\n{err[-4000:]}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and result.returncode != 0:
        pytest.fail(f"`dask-rec {' '.join(map(str, args))}` exited with {result.returncode}\n"
                    f"stdout:\n{out}\nstderr (tail):\n{err[-4000:]}")
    return result


def start_cli(*args, cwd, log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``dask-rec ARGS`` in its own session, stdout and stderr to ``log``; the caller kills it."""
    cmd = [*dask_rec_command(), *map(str, args)]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(env), stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05, proc: subprocess.Popen | None = None,
             log: Path | None = None):
    """Poll ``predicate()`` until it returns something truthy (returned); fail after ``timeout``.

    With ``proc``, fails early when that process exits first (showing ``log``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            pytest.fail(f"the command exited ({proc.returncode}) before {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(interval)


def wait_exit(proc: subprocess.Popen, timeout: float, log: Path | None = None) -> int:
    """Wait for ``proc`` to exit; kill it and fail the test after ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
        pytest.fail(f"the command did not finish in {timeout} s\n{tail}")


# ------------------------------------------------------------------------------------ clusters

class ProcessCluster:
    """A cluster of OS processes started by ``cluster/start-local-cluster.sh`` in ``run_dir``.

    Parameters mirror the script's options. ``env`` is added to the processes' environment.
    """

    def __init__(self, run_dir: Path, *, workers: int = 1, bigmem_workers: int = 1, memory_limit: str = "2GiB",
                 bigmem_memory_limit: str = "4GiB", tls_dir: Path | None = None, env: dict | None = None,
                 timeout: float = START_TIMEOUT):
        self.run_dir = Path(run_dir)
        self.workers = workers
        self.bigmem_workers = bigmem_workers
        self.memory_limit = memory_limit
        self.bigmem_memory_limit = bigmem_memory_limit
        self.tls_dir = tls_dir
        self.env = {
            # a cluster leaked by a crashed test run goes away by itself
            "DASK_REC_IDLE_TIMEOUT": "600s",
            "DASK_REC_DEATH_TIMEOUT": "30",
            **(env or {}),
        }
        self.timeout = timeout
        self.address: str | None = None
        self.start_output = ""

    # -- script
    def _script(self, *args, timeout: float):
        cmd = ["bash", str(START_SCRIPT), "--dir", str(self.run_dir), *map(str, args)]
        dask = _bin("dask")
        if dask:
            cmd += ["--dask", dask]
        try:
            return subprocess.run(cmd, env=subprocess_env(self.env), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            self.kill_all()
            pytest.fail(f"{START_SCRIPT.name} {' '.join(map(str, args))} did not finish in {timeout} s\n{exc.stderr}")

    def _worker_args(self, workers: int, bigmem_workers: int) -> list:
        args = ["--workers", workers, "--bigmem-workers", bigmem_workers, "--memory-limit", self.memory_limit,
                "--bigmem-memory-limit", self.bigmem_memory_limit, "--timeout", int(self.timeout)]
        if self.tls_dir is not None:
            args += ["--tls-dir", self.tls_dir]
        return args

    def start(self) -> str:
        result = self._script("--host", "127.0.0.1", "--port", 0, "--dashboard-port", "none",
                              *self._worker_args(self.workers, self.bigmem_workers), timeout=self.timeout + 30)
        self.start_output = result.stderr
        if result.returncode != 0:
            self.stop()
            pytest.fail(f"{START_SCRIPT.name} failed ({result.returncode}):\n{result.stderr}\n{self.logs_tail()}")
        self.address = result.stdout.strip().splitlines()[-1]
        assert self.address.startswith(("tcp://127.0.0.1:", "tls://127.0.0.1:")), result.stdout
        return self.address

    def add_workers(self, workers: int = 1, bigmem_workers: int = 0) -> None:
        result = self._script("--add", *self._worker_args(workers, bigmem_workers), timeout=self.timeout + 30)
        if result.returncode != 0:
            pytest.fail(f"{START_SCRIPT.name} --add failed ({result.returncode}):\n{result.stderr}")

    def stop(self) -> None:
        """Stop with the script; then SIGKILL any process group still alive (never raises)."""
        try:
            if (self.run_dir / "pids").is_dir():
                self._script("--stop", timeout=60)
        except BaseException:  # noqa: BLE001 - teardown must go on
            pass
        self.kill_all()

    def kill_all(self) -> None:
        for pid in self._recorded_pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "ProcessCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- introspection
    def _recorded_pids(self) -> dict[str, int]:
        pids = {}
        for f in sorted((self.run_dir / "pids").glob("*.pid")) if (self.run_dir / "pids").is_dir() else []:
            with contextlib.suppress(ValueError, OSError):
                pids[f.stem] = int(f.read_text().strip())
        return pids

    def pids(self) -> dict[str, int]:
        """Process name (scheduler, worker-0, bigmem-0, ...) -> PID of the process the script started."""
        return self._recorded_pids()

    def log(self, name: str) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted((self.run_dir / "logs").glob("*.log")) if (self.run_dir / "logs").is_dir() else []:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def client(self, security=None, timeout: str = "30s"):
        """A ``distributed.Client`` of this cluster (not set as the default client)."""
        from distributed import Client

        return Client(self.address, security=security, timeout=timeout, set_as_default=False)


def worker_table(client) -> dict[str, dict]:
    """Worker address -> {"name", "pid" (the worker process, not its nanny), "resources", "memory_limit"}."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    pids = client.run(os.getpid)
    return {addr: {"name": w.get("name"), "pid": pids.get(addr), "resources": w.get("resources") or {},
                   "memory_limit": w.get("memory_limit")} for addr, w in info.items()}


def make_certs(out: Path) -> Path:
    """Certificates for a TLS cluster, made by ``cluster/tls/make-certs.sh`` (skips without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make TLS certificates")
    result = subprocess.run(["bash", str(MAKE_CERTS), "--out", str(out)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"make-certs.sh failed:\n{result.stderr}")
    return out


def read_parquet_dir(path: Path):
    import pandas as pd

    files = sorted(Path(path).glob("*.parquet"))
    assert files, f"no Parquet files in {path}"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@contextlib.contextmanager
def gathered(client):
    """Record every result ``client.gather`` returns while the block runs (a list, yielded)."""
    received = []
    original = client.gather

    def spy(futures, *args, **kwargs):
        result = original(futures, *args, **kwargs)
        received.append(result)
        return result

    client.gather = spy
    try:
        yield received
    finally:
        client.gather = original


@contextlib.contextmanager
def kill_worker_during(client, key_prefixes, timeout: float = 120.0):
    """SIGKILL the first worker process seen running a task whose key starts with one of
    ``key_prefixes`` (looking every 5 ms, for at most ``timeout`` s) while the block runs.

    Yields the list of killed worker addresses (empty when no such task was seen).
    """
    import threading

    prefixes = (key_prefixes,) if isinstance(key_prefixes, str) else tuple(key_prefixes)
    killed = []
    done = threading.Event()
    pids = client.run(os.getpid)

    def killer():
        deadline = time.time() + timeout
        while time.time() < deadline and not done.is_set():
            for addr, keys in client.processing().items():
                if any(str(k).startswith(prefixes) for k in keys):
                    os.kill(pids[addr], signal.SIGKILL)
                    killed.append(addr)
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        done.set()
        thread.join(5)
