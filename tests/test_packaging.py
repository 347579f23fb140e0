"""The package as users install it: ``python -m build`` gives a wheel and an sdist; the wheel, installed into a
fresh virtual environment (which reuses this one's packages, torch included, so nothing is downloaded), runs
``filterscope --version``, ``models`` and ``serve --help``, and holds every data file the code reads."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import filterscope as fs

ROOT = Path(__file__).resolve().parents[1]
DATA = ["filterscope/zoo/imagenet_classes.txt", "filterscope/zoo/imagenet_hierarchy.tsv", "filterscope/py.typed",
        "filterscope/microscope/templates/page.html", "filterscope/microscope/templates/not_found.html",
        "filterscope/microscope/static/app.js", "filterscope/microscope/static/style.css"]


@pytest.mark.integration
def test_the_wheel_installs_into_a_fresh_environment_and_runs(tmp_path):
    pytest.importorskip("build")
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("filterscope-*.whl")
    (sdist,) = (tmp_path / "dist").glob("filterscope-*.tar.gz")
    assert wheel.name.startswith(f"filterscope-{fs.__version__}-") and sdist.stat().st_size > 0
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert not [name for name in DATA if name not in names], sorted(n for n in names if not n.endswith(".py"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # this environment's packages (torch...) after the new one's own: a path line, so its .pth files (this
    # checkout's editable install) are not run
    (Path(purelib) / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # this environment's pip installs into the new one: no index, no dependencies fetched (they are all here)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--force-reinstall", str(wheel)], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import filterscope, sys; print(filterscope.__file__)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the source tree
    command = venv / "bin" / "filterscope"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert version.returncode == 0 and fs.__version__ in version.stdout, version.stdout + version.stderr
    models = subprocess.run([str(command), "models"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert models.returncode == 0 and "efficientnet_lite0" in models.stdout, models.stdout + models.stderr
    serve = subprocess.run([str(command), "serve", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert serve.returncode == 0 and "atlas" in serve.stdout.lower(), serve.stdout + serve.stderr
    # the trust descriptions' WordNet table is read from the installed package: its 1,000 ImageNet classes
    code = "import filterscope.trust.describe as d; print(len(d.hierarchy()[0]))"
    hierarchy = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert hierarchy.returncode == 0 and hierarchy.stdout.split()[-1] == "1000", hierarchy.stdout + hierarchy.stderr
