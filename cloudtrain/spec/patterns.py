"""The patterns of spec and setting values, apart from the spec's pydantic models so that checking a setting
(`CLOUDTRAIN_ROLE_ARN`) or parsing an S3 URI on the way to one DescribeTrainingJob costs no pydantic model
building (importing `cloudtrain.spec.models` takes longer than importing boto3). Stdlib only.
"""

from __future__ import annotations

import re
import types
import unicodedata

NAME_PATTERN = r"^[A-Za-z0-9](-*[A-Za-z0-9])*$"
CHANNEL_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9]+(-[a-z0-9]+)*\.[a-z0-9]+$"  # ml.p6-b200.48xlarge, ml.m7i-flex.large
VERSION_PATTERN = r"^\d+\.\d+(\.\d+)?$"
PY_VERSION_PATTERN = r"^py3\d*$"
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_.:/=+\-@%]{1,255}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"
URL_PATTERN = r"^https?://"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")

# What a pattern means, for error messages (a regex is no help to someone who misspelled a region).
PATTERN_HELP = types.MappingProxyType(
    {
        NAME_PATTERN: "letters, digits and hyphens, starting and ending with a letter or digit",
        CHANNEL_PATTERN: "1-64 letters, digits, '.', '_' or '-'",
        ENV_NAME_PATTERN: "letters, digits and '_', not starting with a digit",
        INSTANCE_TYPE_PATTERN: "a SageMaker instance type such as ml.g5.xlarge",
        VERSION_PATTERN: "a version such as 2.19",
        PY_VERSION_PATTERN: "a Python tag such as py310",
        METRIC_NAME_PATTERN: "1-255 letters, digits or _.:/=+-@%",
        REGION_PATTERN: "a region such as us-east-1",
        ROLE_ARN_PATTERN: "a role ARN such as arn:aws:iam::123456789012:role/SageMakerRole",
        URL_PATTERN: "a URL starting with http:// or https://",
    }
)

TAG_PUNCTUATION = frozenset("_.:/=+-@")
TAG_HELP = "letters, digits, spaces and _.:/=+-@"


def is_tag_text(text: str) -> bool:
    """AWS's tag pattern `[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*`: Unicode letters, separators (spaces, not tabs or
    newlines) and numbers, and a few punctuation marks."""
    return all(unicodedata.category(c)[0] in "LZN" or c in TAG_PUNCTUATION for c in text)
