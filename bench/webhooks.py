"""Webhooks in and out, one after the other: `bench/webhooks_in.py` (signed GitHub App webhooks
accepted per second, routed to one of 1,000 connections) then `bench/webhooks_out.py` (outgoing
deliveries per second to a local receiver). Arguments after `--out` go to the second script.

    .venv/bin/python bench/webhooks.py [in-args...] [--out out-args...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--out") if "--out" in args else len(args)
    incoming, outgoing = args[:split], args[split + 1 :]
    for script, extra in (("webhooks_in.py", incoming), ("webhooks_out.py", outgoing)):
        print(f"== {script} {' '.join(extra)}".rstrip(), flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *extra])
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
