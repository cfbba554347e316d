"""Issue 13, finding 9: a script without ``if __name__ == "__main__":`` that starts a LocalCluster
(through ``fit`` or ``ingest``) runs on threads with one warning line saying what to add."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dask_rec.cluster import unguarded_main_call

BODY = """
import numpy as np
import scipy.sparse as sp
import dask_rec
from dask_rec.data.store_writer import write_store

rng = np.random.default_rng(0)
X = sp.csr_matrix((rng.random((200, 40)) < 0.2).astype(np.float32))
write_store(STORE, X, rows_per_block=50)
"""


def _run(tmp_path, script: str):
    path = tmp_path / "user_script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    return path, proc


def test_unguarded_script_runs_on_threads_and_says_what_to_add(tmp_path):
    script = f"STORE = {str(tmp_path / 's.zarr')!r}\n" + BODY + textwrap.dedent("""
        model = dask_rec.SANSA(dask_rec.SANSAConfig(weight_matrix_density=0.2)).fit(STORE)
        print("items", model.n_items)
    """)
    path, proc = _run(tmp_path, script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "items 40" in proc.stdout
    assert "Traceback" not in proc.stderr
    fit_line = script.splitlines().index("model = dask_rec.SANSA(dask_rec.SANSAConfig(weight_matrix_density=0.2)).fit(STORE)") + 1
    warning = [line for line in proc.stderr.splitlines() if "DaskRecWarning" in line]
    assert len(warning) == 1
    assert warning[0].startswith(f"{path}:{fit_line}: DaskRecWarning: this top-level call starts a LocalCluster")
    assert "put it under 'if __name__ == \"__main__\":'" in warning[0]


def test_guarded_script_uses_worker_processes_without_warning(tmp_path):
    script = textwrap.dedent("""
        def main():
            from dask_rec.cluster import client_context
            with client_context(n_workers=1) as client:
                print("workers", type(client.cluster.workers[0]).__name__)

        if __name__ == "__main__":
            main()
    """)
    _, proc = _run(tmp_path, script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "workers Nanny" in proc.stdout and "DaskRecWarning" not in proc.stderr


def test_not_a_script_is_not_flagged():
    assert unguarded_main_call() is None  # pytest's own __main__ is not the caller's top level
