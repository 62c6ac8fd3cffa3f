"""``make loadtest``: ``python -m loadtest.run [locust args]`` runs loadtest/run.sh.

A short, bounded flash sale against a running system (``make dev``); see run.sh for
the settings (users, time, host, event) and what it prints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    script = Path(__file__).with_name("run.sh")
    os.execvp("bash", ["bash", str(script), *sys.argv[1:]])


if __name__ == "__main__":
    main()
