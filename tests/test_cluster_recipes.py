"""The cluster recipes under ``cluster/``: checked for what can be checked on a machine without them.

There is no Docker engine, Kubernetes or batch system here, so the compose file, the manifests and
the Dockerfile are checked for their structure and the settings dask_rec depends on (a worker with
``--resources bigmem=1`` and more memory, memory limits inside the containers' limits, the shared
volume at the same path everywhere, TLS material wired to the right roles); the shell scripts
parse and validate their options; the dask-jobqueue scripts compile, build their SLURM/PBS clusters
and job scripts when dask-jobqueue is installed, and one SLURM run goes end to end with a stand-in
``sbatch`` that runs the job scripts as local processes.
"""

from __future__ import annotations

import contextlib
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster_utils import CLUSTER, MAKE_CERTS, START_SCRIPT, make_certs, subprocess_env

pytestmark = pytest.mark.cluster

COMPOSE = CLUSTER / "docker-compose.yml"
COMPOSE_TLS = CLUSTER / "docker-compose.tls.yml"
K8S = CLUSTER / "kubernetes" / "daskcluster.yaml"
K8S_TLS = CLUSTER / "kubernetes" / "daskcluster-tls.yaml"
JOBQUEUE = CLUSTER / "jobqueue"
CERT_FILES = {"ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem", "client.pem",
              "client-key.pem"}


def _bytes(text: str) -> int:
    """Bytes of a memory size as Dask or Kubernetes write it (2GiB, 2560M, 4Gi, 10G)."""
    from dask.utils import parse_bytes

    text = str(text)
    text = re.sub(r"^(\d+(?:\.\d+)?)([KMGT])i$", r"\1\2iB", text)  # Kubernetes' Gi -> GiB
    return parse_bytes(text)


def _default(value: str) -> str:
    """``${VAR:-default}`` -> ``default`` (compose interpolation with the variable unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _option(args: list, name: str) -> str:
    args = [_default(a) for a in args]
    assert name in args, f"{name} not in {args}"
    return args[args.index(name) + 1]


# ------------------------------------------------------------------------------------ shell scripts

@pytest.mark.parametrize("script", [START_SCRIPT, MAKE_CERTS], ids=lambda p: p.name)
def test_shell_script_parses_and_has_help(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--help" in result.stdout, result.stderr
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout


def test_start_script_documents_every_option():
    text = START_SCRIPT.read_text()
    parsing = text[text.index('while [ "$#" -gt 0 ]; do'):]
    parsing = parsing[:parsing.index("\ndone\n")]
    handled = set(re.findall(r"^\s+(--[a-z-]+)(?:\|-[a-z])?\)", parsing, re.MULTILINE))
    documented = set(re.findall(r"^#\s+(--[a-z-]+)", text, re.MULTILINE))
    assert {"--host", "--port", "--workers", "--memory-limit", "--bigmem-memory-limit", "--tls-dir", "--tls-ca-file",
            "--tls-cert", "--tls-key", "--stop", "--dir"} <= handled
    assert handled - {"--stop", "--status", "--add"} <= documented, handled - documented


@pytest.mark.parametrize("args", [
    ["--workers", "two"],
    ["--port", "-1"],
    ["--nthreads", "0"],
    ["--no-such-option"],
    ["--tls-cert", "/nonexistent/cert.pem"],  # TLS needs the CA, the certificate and the key
    ["--dask", "/nonexistent/dask"],
], ids=["workers", "port", "nthreads", "unknown", "tls-partial", "dask"])
def test_start_script_rejects_bad_options_before_starting_anything(args, tmp_path):
    result = subprocess.run(["bash", str(START_SCRIPT), "--dir", str(tmp_path / "run"), *args], capture_output=True,
                            text=True, timeout=30, env=subprocess_env())
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and result.stdout == ""
    assert not (tmp_path / "run" / "pids").exists() or not list((tmp_path / "run" / "pids").iterdir())


def test_start_script_stop_and_status_without_a_cluster(tmp_path):
    stop = subprocess.run(["bash", str(START_SCRIPT), "--stop", "--dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=30)
    assert stop.returncode == 0, stop.stderr
    status = subprocess.run(["bash", str(START_SCRIPT), "--status", "--dir", str(tmp_path)], capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 1


def test_make_certs_writes_a_chain_that_verifies(tmp_path):
    out = make_certs(tmp_path / "certs")
    assert {p.name for p in out.iterdir()} == CERT_FILES | {"ca-key.pem"}
    for name in ("scheduler", "worker", "client"):
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.pem"), str(out / f"{name}.pem")],
                                capture_output=True, text=True, timeout=30)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert stat.S_IMODE((out / f"{name}-key.pem").stat().st_mode) == 0o600
    again = subprocess.run(["bash", str(MAKE_CERTS), "--out", str(out)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "--force" in again.stderr  # never overwrites certificates silently


# ------------------------------------------------------------------------------------ docker

def test_dockerfile_installs_dask_rec_with_suitesparse_and_openblas():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"apt-get install[^\n]*\\?\n?[^\n]*libsuitesparse-dev", text)
    assert "libopenblas-dev" in text and "libcholmod3" in text and "libopenblas0" in text
    assert "COPY dask_rec ./dask_rec" in text and "COPY pyproject.toml README.md ./" in text
    assert re.search(r"pip install[^\n]*dask_rec", text)
    assert 'import dask_rec, sksparse.cholmod' in text  # the image checks itself at build time
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!dask_rec/"]
    for needed in ("pyproject.toml", "README.md", "dask_rec"):
        assert (CLUSTER.parent / needed).exists()


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services_commands_and_bigmem_worker(compose):
    services = compose["services"]
    assert {"scheduler", "worker", "bigmem-worker", "dask-rec"} <= set(services)
    assert (CLUSTER / services["scheduler"]["build"]["context"] / services["scheduler"]["build"]["dockerfile"]).resolve() \
        == (CLUSTER / "Dockerfile").resolve()
    images = {s["image"] for s in services.values()}
    assert len(images) == 1  # one image for every node
    scheduler = services["scheduler"]["command"]
    assert scheduler[:2] == ["dask", "scheduler"] and _option(scheduler, "--port") == "8786"
    for name in ("worker", "bigmem-worker"):
        command = services[name]["command"]
        assert command[:3] == ["dask", "worker", "tcp://scheduler:8786"], command
        assert _option(command, "--nthreads") == "1"
    assert _option(services["bigmem-worker"]["command"], "--resources") == "bigmem=1"
    assert "--resources" not in services["worker"]["command"]
    assert services["dask-rec"]["entrypoint"][-1] == "dask-rec" and services["dask-rec"]["profiles"] == ["cli"]


def test_compose_memory_limits(compose):
    services = compose["services"]
    limits = {}
    for name in ("worker", "bigmem-worker"):
        dask_limit = _bytes(_option(services[name]["command"], "--memory-limit"))
        container = _bytes(_default(services[name]["deploy"]["resources"]["limits"]["memory"]))
        assert dask_limit < container, f"{name}: Dask's memory limit must leave room below the container's"
        limits[name] = dask_limit
    assert limits["bigmem-worker"] >= 2 * limits["worker"]
    assert int(_default(services["worker"]["deploy"]["replicas"])) >= 2


def test_compose_shared_volume(compose):
    assert "data" in compose["volumes"]
    for name in ("worker", "bigmem-worker", "dask-rec"):
        assert "data:/data" in compose["services"][name]["volumes"], name


def test_compose_tls_overlay(compose):
    tls = yaml.safe_load(COMPOSE_TLS.read_text())
    assert set(tls["services"]) <= set(compose["services"])
    secrets = tls["secrets"]
    files = {Path(s["file"]).name for s in secrets.values()}
    assert files == CERT_FILES  # the files make-certs.sh writes, without the CA's key
    assert all(s["file"].startswith("./tls/certs/") for s in secrets.values())
    scheduler = tls["services"]["scheduler"]
    assert _option(scheduler["command"], "--protocol") == "tls"
    for name, role in (("scheduler", "scheduler"), ("worker", "worker"), ("bigmem-worker", "worker")):
        service = tls["services"][name]
        command = service["command"]
        if name != "scheduler":
            assert command[2] == "tls://scheduler:8786"
        targets = {s["target"]: s["source"] for s in service["secrets"]}
        for flag, file in (("--tls-ca-file", "ca.pem"), ("--tls-cert", f"{role}.pem"), ("--tls-key", f"{role}-key.pem")):
            path = _option(command, flag)
            assert path.endswith("/" + file) and path in targets, (name, flag, path)
            assert Path(secrets[targets[path]]["file"]).name == file
        assert service["environment"]["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    # the bigmem worker keeps its resource and memory in the TLS commands
    assert _option(tls["services"]["bigmem-worker"]["command"], "--resources") == "bigmem=1"
    client = tls["services"]["dask-rec"]
    env = client["environment"]
    mounted = {s["target"] for s in client["secrets"]}
    for key in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY"):
        assert env[f"DASK_DISTRIBUTED__COMM__TLS__{key}"] in mounted


def test_compose_config_with_docker_if_available():
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    for files in (["-f", "docker-compose.yml"], ["-f", "docker-compose.yml", "-f", "docker-compose.tls.yml"]):
        result = subprocess.run(["docker", "compose", *files, "config", "--no-interpolate", "--quiet"], cwd=CLUSTER,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 or "tls/certs" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ kubernetes

def _docs(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    return {d["kind"]: d for d in docs}


def _container(pod_spec):
    (container,) = pod_spec["containers"]
    return container


@pytest.mark.parametrize("path", [K8S, K8S_TLS], ids=["plain", "tls"])
def test_kubernetes_manifest(path):
    docs = _docs(path)
    assert set(docs) == {"PersistentVolumeClaim", "DaskCluster", "DaskWorkerGroup", "Job"}
    cluster, group, pvc, job = docs["DaskCluster"], docs["DaskWorkerGroup"], docs["PersistentVolumeClaim"], docs["Job"]
    for doc in (cluster, group):
        assert doc["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    assert group["spec"]["cluster"] == name
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    scheduler = _container(cluster["spec"]["scheduler"]["spec"])
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports["tcp-comm"] == 8786
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {p["targetPort"] for p in service["ports"]} <= set(ports)

    workers = cluster["spec"]["worker"]
    bigmem = group["spec"]["worker"]
    assert workers["replicas"] >= 2 and bigmem["replicas"] == 1
    plain_c, big_c = _container(workers["spec"]), _container(bigmem["spec"])
    assert _option(big_c["args"], "--resources") == "bigmem=1"
    assert "--resources" not in plain_c["args"]
    for c in (plain_c, big_c):
        assert c["args"][:2] == ["dask", "worker"]
        limit = _bytes(c["resources"]["limits"]["memory"])
        assert _bytes(c["resources"]["requests"]["memory"]) == limit
        assert _bytes(_option(c["args"], "--memory-limit")) < limit
    assert _bytes(big_c["resources"]["limits"]["memory"]) >= 4 * _bytes(plain_c["resources"]["limits"]["memory"])

    # every pod that touches data mounts the claim at /data
    for spec in (workers["spec"], bigmem["spec"], job["spec"]["template"]["spec"]):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["name"]: m["mountPath"] for m in _container(spec)["volumeMounts"]}
        assert any(claims.get(v) == pvc["metadata"]["name"] and p == "/data" for v, p in mounts.items())
    fit = _container(job["spec"]["template"]["spec"])
    assert fit["command"] == ["dask-rec"] and fit["args"][0] == "fit"
    assert re.fullmatch(rf"(tcp|tls)://{name}-scheduler:8786", _option(fit["args"], "--scheduler"))

    if path == K8S_TLS:
        _check_kubernetes_tls(scheduler, plain_c, big_c, fit, cluster, group, job, name)


def _check_kubernetes_tls(scheduler, plain_c, big_c, fit, cluster, group, job, name):
    assert _option(scheduler["args"], "--protocol") == "tls"
    specs = {"scheduler": (scheduler, cluster["spec"]["scheduler"]["spec"]),
             "worker": (plain_c, cluster["spec"]["worker"]["spec"]),
             "bigmem": (big_c, group["spec"]["worker"]["spec"]),
             "client": (fit, job["spec"]["template"]["spec"])}
    for who, (container, spec) in specs.items():
        role = "worker" if who == "bigmem" else who
        (secret,) = [v["secret"] for v in spec["volumes"] if "secret" in v]
        assert secret["secretName"] == "dask-rec-tls"
        assert {i["key"] for i in secret["items"]} == {"ca.pem", f"{role}.pem", f"{role}-key.pem"}  # no CA key
        mount = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "tls"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        if who == "client":
            assert _option(fit["args"], "--scheduler") == f"tls://{name}-scheduler:8786"
            assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == f"{mount}/client.pem"
            assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == f"{mount}/client-key.pem"
            assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{mount}/ca.pem"
            continue
        assert _option(container["args"], "--tls-ca-file") == f"{mount}/ca.pem"
        assert _option(container["args"], "--tls-cert") == f"{mount}/{role}.pem"
        assert _option(container["args"], "--tls-key") == f"{mount}/{role}-key.pem"
        if who != "scheduler":
            assert container["args"][2] == f"tls://{name}-scheduler:8786"


def test_kubernetes_manifests_render_with_kubectl_if_available(tmp_path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    for path in (K8S, K8S_TLS):
        shutil.copy(path, tmp_path / "manifest.yaml")
        (tmp_path / "kustomization.yaml").write_text("resources:\n- manifest.yaml\n")
        result = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert {d["kind"] for d in yaml.safe_load_all(result.stdout)} == set(_docs(path))


# ------------------------------------------------------------------------------------ dask-jobqueue

def _load(name):
    import importlib.util

    sys.path.insert(0, str(JOBQUEUE))
    try:
        spec = importlib.util.spec_from_file_location(f"dask_rec_jobqueue_{name}", JOBQUEUE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(JOBQUEUE))


@pytest.mark.parametrize("name", ["_common", "slurm", "pbs"])
def test_jobqueue_scripts_compile(name, tmp_path):
    py_compile.compile(str(JOBQUEUE / f"{name}.py"), cfile=str(tmp_path / f"{name}.pyc"), doraise=True)


def test_jobqueue_scripts_say_what_is_missing_without_dask_jobqueue():
    code = ("import runpy, sys; sys.modules['dask_jobqueue'] = None; "
            f"sys.argv = ['slurm.py', 'store', 'model', '--dry-run']; runpy.run_path({str(JOBQUEUE / 'slurm.py')!r}, "
            "run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "dask-jobqueue is not installed" in result.stderr and "pip install dask-jobqueue" in result.stderr


@pytest.mark.parametrize(("name", "cluster_class", "directive"), [
    ("slurm", "SLURMCluster", "#SBATCH"),
    ("pbs", "PBSCluster", "#PBS"),
])
def test_jobqueue_cluster_and_bigmem_job(name, cluster_class, directive, tmp_path):
    pytest.importorskip("dask_jobqueue")
    module = _load(name)
    certs = make_certs(tmp_path / "certs") if shutil.which("openssl") else None
    argv = ["store", "model.zarr", "--jobs", "3", "--memory", "6GiB", "--bigmem-memory", "96GiB", "--queue", "normal",
            "--bigmem-queue", "bigmem", "--account", "proj", "--scheduler-host", "127.0.0.1"]
    for tls in ([], ["--tls-dir", str(certs)] if certs else None):
        if tls is None:
            continue
        args = module._common.base_parser("test").parse_args(argv + tls)
        cluster = module.make_cluster(args)
        try:
            assert type(cluster).__name__ == cluster_class
            assert cluster.scheduler_address.startswith(("tls://127.0.0.1:" if tls else "tcp://127.0.0.1:"))
            job = module._common.bigmem_job(cluster, args, **module.bigmem_options(args))
            plain, big = cluster.job_script(), job.job_script()
        finally:
            cluster.close()
        assert plain.count(directive) >= 3 and big.count(directive) >= 3
        assert "bigmem=1" not in plain and "--resources bigmem=1" in big
        assert "--memory-limit 6.00GiB" in plain and "--memory-limit 96.00GiB" in big
        assert "normal" in plain and "bigmem" in big.split(cluster.scheduler_address)[0]
        assert sys.executable in plain and cluster.scheduler_address in big
        if tls:
            for flag, file in (("--tls-ca-file", "ca.pem"), ("--tls-cert", "worker.pem"), ("--tls-key", "worker-key.pem")):
                assert f"{flag} {certs / file}" in plain and f"{flag} {certs / file}" in big


FAKE_SBATCH = r"""#!/usr/bin/env bash
# stand-in for sbatch: run the job script here, in the background, in a session of its own
set -euo pipefail
job="$(mktemp "$FAKE_SLURM/job-XXXXXX")"
cp "${@: -1}" "$job.sh"
setsid bash "$job.sh" >"$job.log" 2>&1 </dev/null &
echo "$!" >>"$FAKE_SLURM/pids"
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = r"""#!/usr/bin/env bash
for id in "$@"; do
  echo "$id" >>"$FAKE_SLURM/cancelled"
  kill -TERM -- "-$id" 2>/dev/null || kill -TERM "$id" 2>/dev/null || true
done
"""


def _wait_gone(pids, timeout: float) -> list:
    """Wait until no process group of ``pids`` is left; returns those still there after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                os.killpg(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_slurm_recipe_fits_end_to_end_with_a_stand_in_sbatch(tmp_path):
    """``slurm.py`` submits its jobs (to an ``sbatch`` that runs them here), fits, saves, cancels them."""
    pytest.importorskip("dask_jobqueue")
    import signal

    import numpy as np
    import scipy.sparse as sp

    from dask_rec import SANSA
    from dask_rec.data.store_writer import write_store
    from dask_rec.data.synthetic import make_interactions

    log = make_interactions(1_500, 400, 15_000, seed=11)
    X = sp.csr_matrix((np.ones(len(log), np.float32), (log["user_id"].to_numpy(), log["item_id"].to_numpy())),
                      shape=(1_500, 400))
    X.data[:] = 1.0
    write_store(tmp_path / "store", X)

    fake = tmp_path / "fake-slurm"
    bin_dir = tmp_path / "bin"
    fake.mkdir()
    bin_dir.mkdir()
    for tool, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / tool).write_text(text)
        (bin_dir / tool).chmod(0o755)
    env = subprocess_env({"FAKE_SLURM": fake})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    cmd = [sys.executable, str(JOBQUEUE / "slurm.py"), str(tmp_path / "store"), str(tmp_path / "model.zarr"),
           "--jobs", "1", "--memory", "1GiB", "--bigmem-memory", "2GiB", "--bigmem-cores", "1",
           "--scheduler-host", "127.0.0.1", "--interface", "lo", "--local-directory", str(tmp_path / "scratch"),
           "--log-directory", str(tmp_path / "logs"), "--l2", "20", "--density", "0.02", "--wait", "90"]
    try:
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    finally:
        pids = [int(p) for p in (fake / "pids").read_text().split()] if (fake / "pids").exists() else []
        alive = _wait_gone(pids, timeout=20)  # cancelled jobs get SIGTERM: give the workers time to close
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    jobs = "\n".join(p.read_text() for p in sorted(fake.glob("job-*.log")))
    assert result.returncode == 0, result.stderr[-4000:] + "\n" + jobs[-3000:]
    assert len(pids) == 2  # one ordinary job, one bigmem job
    assert sorted(int(p) for p in (fake / "cancelled").read_text().split()) == sorted(pids)  # both cancelled
    scripts = [p.read_text() for p in sorted(fake.glob("job-*.sh"))]
    assert sum("--resources bigmem=1" in s for s in scripts) == 1
    model = SANSA.load(tmp_path / "model.zarr")
    assert model.n_items == 400 and model.weights[0].nnz > 0
    expected = SANSA(model.config).fit(X)
    for got, want in zip(model.weights, expected.weights):
        assert abs(got - want).max() <= 1e-5 * max(abs(want).max(), 1.0)
    assert alive == [], f"jobs still running after the script ended: {alive}"
