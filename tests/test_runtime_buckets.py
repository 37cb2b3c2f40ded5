"""The default bucket as code inside a job sees it (cloudtrain.runtime.buckets): who must own it, and where a
bucket is from GetBucketLocation's answer, which says nothing for us-east-1."""

from __future__ import annotations

from cloudtrain.runtime.buckets import default_bucket_owner, expected_owner, location_region


def test_only_the_default_bucket_names_an_owner() -> None:
    assert default_bucket_owner("sagemaker-us-east-1-123456789012") == "123456789012"
    assert expected_owner("sagemaker-eu-west-1-123456789012") == {"ExpectedBucketOwner": "123456789012"}
    assert expected_owner("my-own-bucket") == {}


def test_a_us_east_1_bucket_is_us_east_1s_whatever_the_jobs_region() -> None:
    assert location_region(None) == "us-east-1"  # S3 gives no LocationConstraint for us-east-1
    assert location_region("") == "us-east-1"
    assert location_region("EU") == "eu-west-1"
    assert location_region("ap-south-1") == "ap-south-1"
