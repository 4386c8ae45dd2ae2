import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(cmd, cwd=REPO, timeout=900, **kw):
    "Run a command, returning the CompletedProcess (text mode, output captured)."
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def reproduce():
    "Call `python -m imgsci.reproduce ARGS…` in a subprocess."
    def _call(*args, timeout=600):
        return run([sys.executable, "-m", "imgsci.reproduce", *map(str, args)], timeout=timeout)
    return _call
