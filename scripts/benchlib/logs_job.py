"""Stand-in training script of the bench's `logs` row: says it is up, then idles until the bench says stop.

The job stays InProgress (on the SageMaker control plane, which runs it with the local backend) while the
bench writes its own lines into the job's CloudWatch streams and times their arrival in `cloudtrain logs -f`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--stop_file", required=True)
parser.add_argument("--max_seconds", type=float, default=600.0)
args, _ = parser.parse_known_args()
host = os.environ.get("SM_CURRENT_HOST", "?")
print(f"bench-logs ready host={host}", flush=True)
deadline = time.monotonic() + args.max_seconds
while not Path(args.stop_file).exists() and time.monotonic() < deadline:
    time.sleep(0.1)
print(f"bench-logs done host={host}", flush=True)
