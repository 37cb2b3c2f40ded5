"""cloudtrain's one validator of SageMaker requests (cloudtrain.backends.sagemaker.rules): the service model's
constraints and AWS's documented rules, each refusal placed at its path. The control plane answers with it,
and `submit` refuses with it before any upload (tests/test_aws_strictness.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudtrain.backends.sagemaker.rules import Refused, check, violations

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
REQUEST: dict[str, Any] = {
    "TrainingJobName": "digits-0123456789ab",
    "AlgorithmSpecification": {"TrainingImage": "123.dkr.ecr.us-east-1.amazonaws.com/t:1", "TrainingInputMode": "File"},
    "HyperParameters": {"epochs": "3"},
    "RoleArn": ROLE,
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
    "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "CheckpointConfig": {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/opt/ml/checkpoints"},
    "InputDataConfig": [
        {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/t"}}}
    ],
    "VpcConfig": {"SecurityGroupIds": ["sg-0123"], "Subnets": ["subnet-0123"]},
    "Tags": [{"Key": "team", "Value": "ml"}],
}


def with_change(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    node = request
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return request


def channel(i: int) -> dict[str, Any]:
    return {"ChannelName": f"c{i}", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://b/{i}"}}}


SEVEN = [  # the seven requests AWS refuses, each with the place it names and AWS's words
    (("Tags", 0, "Key"), "AWS:team", ("Tags", 0, "Key"), "reserved prefix 'aws:'"),
    (("VpcConfig", "Subnets", 0), "subnet_0123", ("VpcConfig", "Subnets", 0), "pattern: [-0-9a-zA-Z]+"),
    (("InputDataConfig",), [channel(i) for i in range(21)], ("InputDataConfig",), "length less than or equal to 20"),
    (("ResourceConfig", "VolumeKmsKeyId"), "alias/my key", ("ResourceConfig", "VolumeKmsKeyId"), "[a-zA-Z0-9:/_-]*"),
    (("RoleArn",), ROLE.replace("Role", "My Role"), ("RoleArn",), "regular expression pattern: arn:aws"),
    (
        ("CheckpointConfig", "S3Uri"),
        "s3://bucket/" + "c" * 1020,
        ("CheckpointConfig", "S3Uri"),
        "less than or equal to 1024",
    ),
    (("HyperParameters",), {"two\nlines": "1"}, ("HyperParameters", "two\nlines"), "pattern: .*"),
]


@pytest.mark.parametrize(("change", "value", "path", "says"), SEVEN, ids=[s[2][0] for s in SEVEN])
def test_each_refusal_names_its_place_and_aws_words(change: tuple[Any, ...], value: Any, path: Any, says: str) -> None:
    found = violations("CreateTrainingJob", with_change(change, value))
    assert [v.path for v in found] == [path], found
    assert says in found[0].text and says in found[0].reason


def test_a_request_aws_takes_passes() -> None:
    check("CreateTrainingJob", REQUEST)


def test_the_message_is_aws_validation_exception() -> None:
    with pytest.raises(Refused) as refused:
        check("CreateTrainingJob", with_change(("VpcConfig", "Subnets", 0), "subnet_0123"))
    assert str(refused.value) == (
        "1 validation error detected: Value 'subnet_0123' at 'vpcConfig.subnets.1.member' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [-0-9a-zA-Z]+"
    )


def test_a_tuning_job_is_checked_with_the_same_rules_for_each_definition() -> None:
    definition = {
        "StaticHyperParameters": {"epochs": "3"},
        "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "EnableManagedSpotTraining": True,
    }
    request = {
        "HyperParameterTuningJobName": "sweep-1",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
        },
        "TrainingJobDefinition": definition,
        "Tags": [{"Key": "Aws:x", "Value": "y"}],
    }
    found = violations("CreateHyperParameterTuningJob", request)
    assert [v.path for v in found] == [
        ("TrainingJobDefinition", "StoppingCondition", "MaxWaitTimeInSeconds"),
        ("Tags", 0, "Key"),
    ], found
