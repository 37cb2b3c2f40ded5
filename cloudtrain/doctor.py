"""`cloudtrain doctor`: what can be checked of an AWS set-up before a submit, each check one line.

Region, credentials (STS GetCallerIdentity), SageMaker's role (IAM GetRole: it exists and its trust policy
lets SageMaker assume it) and the output bucket (HeadBucket: it is the caller's, in the job's region, or does
not exist yet). Only reads; a check the caller has no permission for is a warning, not a failure. The
permissions cloudtrain needs are in docs/iam-policy.json (the caller's) and docs/iam-job-role-policy.json
(the job role's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cloudtrain.aws import NO_REGION, AwsSession, default_bucket_owner, error_code, translate_errors
from cloudtrain.errors import AwsRefused, BackendUnavailable, CloudtrainError
from cloudtrain.settings import Settings
from cloudtrain.spec.patterns import ROLE_ARN_PATTERN, S3_URI

Status = Literal["ok", "warn", "fail"]
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Diagnosis:
    checks: tuple[Check, ...]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; 3 when AWS cannot be reached as configured; 5 when AWS would refuse a submit."""
        failed = {c.name for c in self.checks if c.status == "fail"}
        if failed & {"region", "credentials"}:
            return BackendUnavailable.exit_code
        return AwsRefused.exit_code if failed else 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "checks": [c.__dict__ for c in self.checks]}


def diagnose(settings: Settings) -> Diagnosis:
    """Every check that can run: a failed region or credentials check ends the list (nothing else can be asked)."""
    session = AwsSession(settings)
    checks: list[Check] = []
    try:
        region = session.region
    except BackendUnavailable:
        return Diagnosis((Check("region", "fail", NO_REGION.removeprefix("no AWS region: ")),))
    checks.append(Check("region", "ok", region))
    try:
        with translate_errors(session.where, "STS GetCallerIdentity"):
            identity = session.client("sts").get_caller_identity()
    except CloudtrainError as e:
        return Diagnosis((*checks, Check("credentials", "fail", str(e))))
    account = str(identity["Account"])
    checks.append(Check("credentials", "ok", f"{identity.get('Arn', '?')} (account {account})"))
    checks.append(_role(session, settings.role_arn, account))
    checks.append(_bucket(session, settings.output_s3_uri, account, region))
    return Diagnosis(tuple(checks))


def _role(session: AwsSession, role_arn: str | None, account: str) -> Check:
    import re

    from botocore.exceptions import ClientError

    if not role_arn:
        return Check("role", "fail", "no IAM role for SageMaker: set CLOUDTRAIN_ROLE_ARN, --role-arn or role_arn")
    if not re.match(ROLE_ARN_PATTERN, role_arn):
        return Check("role", "fail", f"{role_arn} is not an IAM role ARN")
    if role_arn.split(":")[4] != account:
        return Check("role", "warn", f"{role_arn} is in another account: not checked (iam:PassRole must allow it)")
    try:
        role = session.client("iam").get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]
    except ClientError as e:
        if error_code(e) == "NoSuchEntity":
            return Check("role", "fail", f"{role_arn} does not exist")
        if error_code(e) in ("AccessDenied", "AccessDeniedException"):
            return Check("role", "warn", f"{role_arn}: not checked (no iam:GetRole permission)")
        raise
    trust = str(role.get("AssumeRolePolicyDocument", ""))
    if SAGEMAKER_PRINCIPAL not in trust:
        return Check("role", "fail", f"{role_arn}: its trust policy does not let {SAGEMAKER_PRINCIPAL} assume it")
    return Check("role", "ok", f"{role_arn}: exists, and SageMaker may assume it")


def _bucket(session: AwsSession, output_s3_uri: str | None, account: str, region: str) -> Check:
    """HeadBucket on the output bucket; a default-named one is asked with ExpectedBucketOwner (see cloudtrain.aws)."""
    from botocore.exceptions import ClientError

    m = S3_URI.match(output_s3_uri or "")
    bucket = m.group("bucket") if m else f"sagemaker-{region}-{account}"
    ours = "the default bucket" if not m else "output_s3_uri's bucket"
    try:
        answer = session.client("s3").head_bucket(Bucket=bucket)
    except ClientError as e:
        code, answer = error_code(e), e.response
        if code in ("404", "NoSuchBucket", "NotFound"):
            if m:
                return Check("bucket", "fail", f"{bucket} ({ours}) does not exist: create it in {region}")
            return Check("bucket", "ok", f"{bucket} ({ours}) does not exist yet: the first submit creates it")
        if code not in ("403", "AccessDenied"):
            raise
        if default_bucket_owner(bucket):
            return Check("bucket", "fail", f"{bucket} ({ours}) is another account's, or denies you: set output_s3_uri")
        return Check("bucket", "warn", f"{bucket} ({ours}): HeadBucket refused (no s3:ListBucket?)")
    where = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
    if where and where != region:
        return Check("bucket", "fail", f"{bucket} ({ours}) is in {where}: SageMaker in {region} cannot use it")
    return Check("bucket", "ok", f"{bucket} ({ours}): yours, in {region}")
