"""SageMaker's default bucket as code inside a job sees it (stdlib only: it ships in the code tarball).

Anyone can create a bucket named `sagemaker-<region>-<account>` first, so every request cloudtrain sends to
one, on the user's machine (`cloudtrain.aws`) and inside the job alike, names the account that must own it
(`ExpectedBucketOwner`, as the sagemaker SDK sends it): S3 answers 403 when another account does.
"""

from __future__ import annotations

import re

DEFAULT_BUCKET = re.compile(r"^sagemaker-[a-z]{2}(-[a-z]+)+-\d-(?P<account>\d{12})$")


def default_bucket_owner(bucket: str) -> str | None:
    """The account a bucket named as SageMaker's default bucket must belong to; None for any other name."""
    m = DEFAULT_BUCKET.match(bucket)
    return m.group("account") if m else None


def expected_owner(bucket: str) -> dict[str, str]:
    """The `ExpectedBucketOwner` argument for a request to `bucket` (none for a bucket of another name)."""
    owner = default_bucket_owner(bucket)
    return {"ExpectedBucketOwner": owner} if owner else {}


def location_region(constraint: str | None) -> str:
    """A bucket's region from GetBucketLocation's LocationConstraint: S3 gives none for us-east-1 (and the
    legacy `EU` for eu-west-1)."""
    if not constraint:
        return "us-east-1"
    return "eu-west-1" if constraint == "EU" else constraint
