"""The package surface: cheap import, public names, console script."""

import subprocess
import sys
import types


def test_import_is_cheap():
    code = ("import sys, dask_rec; heavy = [m for m in ('dask', 'distributed', 'numba', 'scipy', 'sksparse', 'zarr') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import dask_rec loaded {out}"


def test_public_functions_are_not_shadowed_by_modules():
    import dask_rec
    import dask_rec.serving.evaluation  # noqa: F401  (importing submodules must not replace the functions)
    import dask_rec.data.ingestion  # noqa: F401

    for name in dask_rec.__all__:
        value = getattr(dask_rec, name)
        assert not isinstance(value, types.ModuleType), name
    assert callable(dask_rec.ingest) and callable(dask_rec.evaluate)


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "dask_rec.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("ingest", "fit", "recommend", "evaluate", "demo", "generate"):
        assert command in out


def test_cli_bad_arguments_give_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dask_rec.cli", "fit", str(tmp_path / "missing"), str(tmp_path / "m"),
                           "--density", "2"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("dask-rec fit: error: weight_matrix_density must be in (0, 1]")
    proc = subprocess.run([sys.executable, "-m", "dask_rec.cli", "fit", str(tmp_path / "missing"), str(tmp_path / "m")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing" in proc.stderr.strip().splitlines()[-1]


def test_cli_keeps_dask_chatter_for_verbose(tmp_path):
    """A LocalCluster started by the CLI logs its own start/stop messages only with -v."""
    import pandas as pd

    log = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 1, 2, 3, 3], "item_id": ["a", "b", "a", "b", "c"]}).to_parquet(log)

    def ingest(*flags, target):
        return subprocess.run([sys.executable, "-m", "dask_rec.cli", *flags, "ingest", str(log),
                               str(tmp_path / target), "--workers", "1"], capture_output=True, text=True,
                              timeout=180)

    quiet = ingest(target="quiet.zarr")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "INFO dask_rec" in quiet.stderr and " distributed." not in quiet.stderr, quiet.stderr[-2000:]
    chatty = ingest("-v", target="chatty.zarr")
    assert chatty.returncode == 0, chatty.stderr[-2000:]
    assert "INFO distributed.scheduler" in chatty.stderr
