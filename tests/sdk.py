"""The sagemaker SDK v2 in its own venv (.venv-sdk): what a user would use instead of cloudtrain, run as a script
whose last stdout line is JSON, with telemetry off and a home of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SDK_PYTHON = REPO / ".venv-sdk" / "bin" / "python"
SDK_MISSING = f"{SDK_PYTHON} is absent (scripts/setup --with-sdk creates .venv-sdk)"
TELEMETRY_OFF = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def run_sdk(source: str, settings: Mapping[str, Any], tmp_path: Path, extra_env: Mapping[str, str] = ()) -> Any:
    """Run `source` under the SDK's Python with `settings` as its argument; the JSON of its last stdout line (the
    SDK may log to stdout before). No AWS_* or SAGEMAKER_* setting of this process reaches it but `extra_env`."""
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text(TELEMETRY_OFF)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))},
        **dict(extra_env),
        "HOME": str(tmp_path / "sdk-home"),  # the SDK may write under ~; not the developer's
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }
    script = tmp_path / "sdk_script.py"
    script.write_text(source)
    sdk = subprocess.run(
        [str(SDK_PYTHON), str(script), json.dumps(settings)], env=env, capture_output=True, text=True, timeout=180
    )
    assert sdk.returncode == 0, (sdk.stdout + sdk.stderr)[-3000:]
    return json.loads(sdk.stdout.strip().splitlines()[-1])
