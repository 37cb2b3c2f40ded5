"""What a user of the sagemaker SDK (v2) runs to start the same job: TensorFlow estimator, fit(wait=False).

Run under `.venv-sdk/bin/python`; telemetry is off through the SDK's own defaults config
(SAGEMAKER_USER_CONFIG_OVERRIDE, set by the bench); every AWS call goes to AWS_ENDPOINT_URL. The default
bucket is given, as the SDK otherwise asks STS for the account through a hard-coded regional STS URL that
ignores AWS_ENDPOINT_URL. Prints one JSON line: the job name and where the time went.
"""

from __future__ import annotations

import argparse
import json
import time

began = time.perf_counter()

import boto3  # noqa: E402
from sagemaker.session import Session  # noqa: E402
from sagemaker.tensorflow import TensorFlow  # noqa: E402

imported = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source_dir")
    parser.add_argument("--role", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--instance-count", type=int, default=2)
    args = parser.parse_args()
    session = Session(boto_session=boto3.Session(), default_bucket=args.bucket)
    estimator = TensorFlow(
        entry_point="train.py",
        source_dir=args.source_dir,
        role=args.role,
        instance_count=args.instance_count,
        instance_type="ml.g5.xlarge",
        framework_version="2.19",
        py_version="py312",
        distribution={"multi_worker_mirrored_strategy": {"enabled": True}},
        sagemaker_session=session,
    )
    estimator.fit(wait=False, logs=False)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "job": estimator.latest_training_job.name,
                "import_s": round(imported - began, 3),
                "fit_s": round(done - imported, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
