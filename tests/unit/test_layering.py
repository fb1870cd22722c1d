"""The domain package never imports Prefect."""
import subprocess
import sys


def test_domain_package_never_imports_prefect():
    code = ("import pkgutil, importlib, sys, retrainer\n"
            "for m in pkgutil.walk_packages(retrainer.__path__, 'retrainer.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
            "print(bad)\nassert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
