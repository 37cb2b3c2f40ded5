"""The SageMaker backend: CreateTrainingJob built with botocore as AWS's TensorFlow estimator would send it
(`request`), logs from CloudWatch (`cloudwatch`), artifacts from S3 (`artifacts`). Why it is built by hand, how
jobs are found, and the requests each command costs: docs/architecture.md, "The SageMaker backend".
"""

from __future__ import annotations

import enum
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.aws import (
    AwsSession,
    backoff,
    default_bucket_owner,
    error_code,
    error_message,
    translate_errors,
)
from cloudtrain.backends.contract import JOB_NAME, ROLE_ARN
from cloudtrain.backends.sagemaker import artifacts, cloudwatch, tuning
from cloudtrain.backends.sagemaker.artifacts import artifact_uris
from cloudtrain.backends.sagemaker.describe import NAME, created_job_info, epoch_seconds, job_info
from cloudtrain.backends.sagemaker.request import (
    CODE_TAG,
    MANAGED_TAG,
    JobPlan,
    build_request,
    git_commit,
    job_tags,
    refuse_what_aws_refuses,
    request_code_uri,
)
from cloudtrain.errors import AwsRefused, BackendUnavailable, JobExists, JobNotFound, UserError, quoted
from cloudtrain.files import writing_to
from cloudtrain.jobs import EVAL_REPORT, EVAL_REPORT_MAX_BYTES, TERMINAL, Artifacts, JobInfo, LogEvent
from cloudtrain.settings import ENV_VARS, Settings
from cloudtrain.transfer import vendor
from cloudtrain.transfer.code import CODE_TARBALL, code_tree
from cloudtrain.transfer.download import S3Object, list_objects
from cloudtrain.transfer.s3 import ProgressCallback, S3Location
from cloudtrain.transfer.tarballs import json_member
from cloudtrain.transfer.upload import (
    DigestCache,
    S3Uploader,
    TreeDigest,
    Upload,
    channel_uri,
    code_location,
    data_location,
    tree_digest,
)

if TYPE_CHECKING:  # the spec's pydantic models cost more to import than boto3: `status` and `logs` never need them
    from cloudtrain.channels.plan import ChannelCopy
    from cloudtrain.spec.models import JobSpec
    from cloudtrain.sweep.trials import SweepInfo

OFFLINE_ACCOUNT = "ACCOUNT-ID"


class Mode(enum.Enum):
    """What preparing a job may do: SUBMIT builds, creates the bucket, uploads what S3 lacks and copies a resumed
    job's checkpoints; PLAN (`--dry-run`) only reads AWS; OFFLINE (`--dry-run` where AWS cannot be reached)
    reads nothing and shows a placeholder account."""

    SUBMIT = "submit"
    PLAN = "plan"
    OFFLINE = "offline"


def _not_found(exc: Exception) -> bool:
    message = error_message(exc).lower()
    return error_code(exc) == "ValidationException" and ("not found" in message or "could not find" in message)


@dataclass
class SageMakerBackend:
    """Training jobs on SageMaker, in the region, account and endpoint its `settings` say.

    `logs(follow=True)` reads each host's stream at most every `poll_interval` seconds (GetLogEvents with its
    forward token), backing off by half while it is quiet up to `max_poll_interval` (so a line written after a
    quiet spell shows up within that); it checks the job's status every `status_interval` and looks for new
    streams every `discover_interval`, at once when the status changes, and at every status check while hosts
    still have no stream (see `cloudwatch.follow`). Every log call goes through the session's per-account budget
    (`AwsSession.budget`, docs/quotas.md): up to 10 busy streams are read every 2.1 s, more share the budget (a
    stream every hosts / 5 s); DescribeTrainingJob answers are shared for most of `status_interval`.
    """

    settings: Settings = field(default_factory=Settings)
    poll_interval: float = 2.1
    max_poll_interval: float = 2.5
    status_interval: float = 5.0
    discover_interval: float = 60.0
    download_workers: int = 8
    name: str = field(default=NAME, init=False)
    uploads_data: bool = field(default=True, init=False)  # the capabilities: see `Backend`
    record_at_submit: bool = field(default=True, init=False)
    status_from_record: bool = field(default=True, init=False)
    trains_here: bool = field(default=False, init=False)
    last_plan: JobPlan | None = field(default=None, init=False, repr=False)
    _aws: AwsSession | None = field(default=None, init=False, repr=False)
    _tensorboard_uris: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)
    _described: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict, init=False, repr=False)

    # sessions and shared look-ups

    def _session(self) -> AwsSession:
        if self._aws is None:
            self._aws = AwsSession(self.settings)
        return self._aws

    def _role(self) -> str:
        role = self.settings.role_arn
        if not role:
            where = f"set aws.role_arn in the spec, pass --role-arn, or set {ENV_VARS['role_arn']}"
            raise UserError(f"no IAM role for SageMaker: {where}")
        if not ROLE_ARN.match(role):
            raise UserError(f"aws.role_arn {quoted(role)} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return role

    def _describe_raw(self, session: AwsSession, job_name: str, *, fresh: bool = False) -> dict[str, Any]:
        """DescribeTrainingJob, shared: an answer younger than most of `status_interval` is reused, so `--wait`'s
        status and its log follower (threads of one process) make one call per job per interval between them."""
        from botocore.exceptions import ClientError

        seen = self._described.get(job_name)
        if not fresh and seen is not None and time.monotonic() - seen[0] < 0.9 * self.status_interval:
            return seen[1]
        try:
            raw = dict(session.client("sagemaker").describe_training_job(TrainingJobName=job_name))
        except ClientError as e:
            if _not_found(e):
                raise JobNotFound(f"no SageMaker training job named {quoted(job_name)} in {session.region}") from None
            raise
        self._described[job_name] = (time.monotonic(), raw)
        return raw

    def _describe_answered(self, session: AwsSession, job_name: str) -> dict[str, Any]:
        """`_describe_raw`, asked again (with backoff) while AWS throttles or fails inside: a follow never ends
        for that."""
        from botocore.exceptions import ClientError

        strikes = 0
        while True:
            try:
                return self._describe_raw(session, job_name)
            except ClientError as e:
                if not cloudwatch.busy(e):
                    raise
                strikes += 1
                time.sleep(backoff(strikes))

    def _job_exists(self, session: AwsSession, job_name: str) -> bool:
        try:
            self._describe_raw(session, job_name)
        except JobNotFound:
            return False
        return True

    @staticmethod
    def _output_prefix(session: AwsSession, spec: JobSpec, mode: Mode) -> S3Location:
        """output.s3_uri, or the SDK's default bucket `sagemaker-<region>-<account>` + `/cloudtrain`."""
        if spec.output.s3_uri:
            return S3Location.parse(spec.output.s3_uri)
        account = OFFLINE_ACCOUNT if mode is Mode.OFFLINE else session.account_id()
        return S3Location(f"sagemaker-{session.region}-{account}", "cloudtrain")

    @staticmethod
    def _bucket_exists(session: AwsSession, bucket: str) -> bool:
        """HeadBucket (with ExpectedBucketOwner on a default-named bucket: see `aws.expect_default_bucket_owner`).

        A 403 on a bucket named as SageMaker's default bucket means another account owns it (or it denies us):
        refused, nothing is sent there. On a bucket the user named, 403 is left to the uploads to tell.
        """
        from botocore.exceptions import ClientError

        try:
            session.client("s3").head_bucket(Bucket=bucket)
        except ClientError as e:
            if error_code(e) in ("404", "NoSuchBucket", "NotFound"):
                return False
            if error_code(e) in ("403", "AccessDenied"):
                if default_bucket_owner(bucket):
                    raise AwsRefused(
                        f"the S3 bucket {bucket} is not account {default_bucket_owner(bucket)}'s (another account "
                        "owns it, or it denies you): nothing was sent; set output.s3_uri to a bucket of yours"
                    ) from None
                return True  # someone's bucket: the uploads will tell whether we may write to it
            raise
        return True

    @staticmethod
    def _check_instance_type(session: AwsSession, instance_type: str) -> None:
        """AWS refuses a type outside the TrainingInstanceType enum of its API (botocore's copy of it does not
        check enums): said here, before any upload, with the closest types SageMaker trains on."""
        import difflib

        known = session.client("sagemaker").meta.service_model.shape_for("TrainingInstanceType").enum
        if known and instance_type not in known:
            close = difflib.get_close_matches(instance_type, known, n=3, cutoff=0.8)
            hint = f" (closest: {', '.join(close)})" if close else ""
            raise UserError(f"resources.instance_type: SageMaker does not train on {quoted(instance_type)}{hint}")

    @staticmethod
    def _check_bucket_regions(session: AwsSession, spec: JobSpec) -> None:
        """SageMaker reads and writes only buckets of the job's region: each bucket the spec names is asked its
        region (one HeadBucket; S3 gives it even with a 403), and one elsewhere is refused before any upload."""
        from botocore.exceptions import ClientError

        named = {"output.s3_uri": spec.output.s3_uri, "checkpoints.s3_uri": spec.checkpoints.s3_uri}
        named |= {f"data.{ch}": c.uri for ch, c in spec.data.items() if c.is_s3 and c.uri}
        regions: dict[str, str | None] = {}
        for where, uri in named.items():
            if not uri:
                continue
            bucket = S3Location.parse(uri).bucket
            if bucket not in regions:
                try:
                    answer = session.client("s3").head_bucket(Bucket=bucket)
                except ClientError as e:
                    answer = e.response
                headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                regions[bucket] = headers.get("x-amz-bucket-region") or answer.get("BucketRegion")
            region = regions[bucket]
            if region and region != session.region:
                raise UserError(
                    f"{where}: the S3 bucket {bucket} is in {region}, the job would run in {session.region}: "
                    "SageMaker uses buckets of its own region only"
                )

    @staticmethod
    def _create_bucket(session: AwsSession, bucket: str) -> None:
        """CreateBucket; one that another submit of ours created a moment ago is as good (first submits at once):
        S3 answers BucketAlreadyOwnedByYou for it outside us-east-1 (200 in us-east-1), and BucketAlreadyExists
        when another account owns the name, which is refused."""
        from botocore.exceptions import ClientError

        s3 = session.client("s3")
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if session.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": session.region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as e:
            if error_code(e) != "BucketAlreadyOwnedByYou":
                raise

    @staticmethod
    def _checkpoint_uri(spec: JobSpec, job_name: str, output: S3Location) -> str:
        """The job's own checkpoint prefix: `<checkpoints.s3_uri>/<job>`, else `<output>/<job>/checkpoints`.

        Never shared between jobs: SageMaker restores whatever is under the prefix into every new job, so a
        prefix shared by all jobs of a spec would make each resume the last. Resuming is `--resume JOB` only.
        """
        if spec.checkpoints.s3_uri:
            return S3Location.parse(spec.checkpoints.s3_uri).join(job_name).uri
        return output.join(job_name, "checkpoints").uri

    def _resume_source(self, session: AwsSession, resume_from: str) -> tuple[S3Location, list[S3Object]]:
        """`--resume JOB`: that job's checkpoint prefix and what it holds (copied to the new job's before it starts,
        as the local backend copies the old job's checkpoints folder)."""
        previous = self._describe_raw(session, resume_from)
        uri = previous.get("CheckpointConfig", {}).get("S3Uri")
        if not uri:
            raise UserError(f"--resume: job {quoted(resume_from)} has no checkpoint configuration to resume from")
        source = S3Location.parse(uri)
        objects = list_objects(session.client("s3"), source, Path("."))
        if not objects:
            raise UserError(f"--resume: job {quoted(resume_from)} saved no checkpoints under {uri}")
        return source, objects

    @staticmethod
    def _copy_checkpoints(session: AwsSession, source: S3Location, objects: list[S3Object], dest: str) -> None:
        """Server-side copies (CopyObject, or UploadPartCopy for large files) of a job's checkpoints to dest."""
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        target = S3Location.parse(dest)
        prefix = source.key + "/" if source.key else ""
        with create_transfer_manager(session.client("s3"), TransferConfig(max_concurrency=8)) as manager:
            futures = [
                manager.copy(
                    {"Bucket": obj.location.bucket, "Key": obj.location.key},
                    target.bucket,
                    target.join(obj.location.key[len(prefix) :]).key,
                )
                for obj in objects
            ]
            for future in futures:
                future.result()

    @staticmethod
    def _built_image(session: AwsSession, spec: JobSpec, mode: Mode) -> str | None:
        """`image.build`'s content-hash URI; a real submit first builds and pushes it when ECR lacks the tag."""
        if spec.image.kind != "build":
            return None
        from cloudtrain.image.build import ensure_image
        from cloudtrain.image.context import image_reference

        if mode is not Mode.SUBMIT:
            account = OFFLINE_ACCOUNT if mode is Mode.OFFLINE else session.account_id()
            return image_reference(spec, account, session.region)
        return ensure_image(spec, session=session)

    def _prepare(
        self,
        session: AwsSession,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None,
        mode: Mode,
        on_progress: ProgressCallback | None = None,
    ) -> JobPlan:
        """Digest the code and data, build the whole request, then upload what S3 lacks (a plan: only look;
        offline: not even that).

        Everything is content-addressed, so the request (with its limits and tags checked) is complete
        before the first byte goes to S3 or a bucket is created. When HeadObject finds the code and every
        data manifest, the bucket exists and nothing is built or sent: no tarball, no HeadBucket.
        """
        from cloudtrain.image.stock import resolve_image
        from cloudtrain.pricing import estimate

        if not JOB_NAME.match(job_name):
            raise UserError(f"job name {quoted(job_name)}: SageMaker wants 1-63 letters, digits and hyphens")
        role = self._role()
        region = session.region
        self._check_instance_type(session, spec.resources.instance_type)
        if mode is not Mode.OFFLINE:
            self._check_bucket_regions(session, spec)
        built = self._built_image(session, spec, mode)
        image = resolve_image(spec.image, region, spec.resources.instance_type, built_uri=built)
        output = self._output_prefix(session, spec, mode)
        checkpoint_uri = self._checkpoint_uri(spec, job_name, output)
        notes: list[str] = []
        resume = None
        if resume_from and mode is not Mode.OFFLINE:
            resume = self._resume_source(session, resume_from)
            size = sum(o.size for o in resume[1])
            verb = "copied" if mode is Mode.SUBMIT else "are copied"
            notes.append(
                f"resume: {len(resume[1])} checkpoint file(s), {size} bytes, of {resume_from} {verb} from "
                f"{resume[0].uri} to {checkpoint_uri} before the job starts"
            )
        tree = code_tree(spec.code, extra=vendor.job_entries(spec))
        if tree.note:
            notes.append(tree.note)
        local = {ch: Path(c.uri) for ch, c in spec.data.items() if c.is_local and c.uri}
        digest_cache = DigestCache(self.settings.home / "cache" / "digests")  # an unchanged tree is not re-read
        digests = {ch: tree_digest(path, digest_cache) for ch, path in local.items()}
        channels = {
            ch: channel_uri(data_location(output, digests[ch])[0]) if ch in digests else c.uri
            for ch, c in spec.data.items()
            if c.uri
        }
        request = build_request(
            spec,
            job_name,
            region=region,
            role_arn=role,
            image_uri=image.uri,
            code_uri=code_location(output, tree).uri,
            channels=channels,
            output=output,
            checkpoint_uri=checkpoint_uri,
            tags=job_tags(spec, tree.sha256, git_commit(Path(spec.code.source_dir))),
        )
        refuse_what_aws_refuses(request)  # before anything is uploaded, created or built
        if mode is Mode.OFFLINE:
            uploads = [
                Upload(
                    "code",
                    CODE_TARBALL,
                    str(spec.code.source_dir),
                    request_code_uri(request),
                    tree.sha256,
                    tree.size,
                    None,
                )
            ]
            uploads += [
                Upload("data", ch, str(local[ch]), channels[ch], d.sha256, d.size, None) for ch, d in digests.items()
            ]
            return JobPlan(request, tuple(uploads), image, estimate(spec.resources), tree, tuple(notes))
        uploader = S3Uploader(
            session.client("s3"), kms_key_id=spec.aws.kms_key_id, on_progress=on_progress, dry_run=mode is Mode.PLAN
        )
        code_exists = uploader.exists(code_location(output, tree))
        data_exists = {ch: uploader.exists(data_location(output, d)[1]) for ch, d in digests.items()}
        if not (code_exists and all(data_exists.values())) and not self._bucket_exists(session, output.bucket):
            if spec.output.s3_uri and mode is Mode.SUBMIT:
                raise UserError(
                    f"output.s3_uri: the S3 bucket {output.bucket!r} does not exist (create it, or leave "
                    "output.s3_uri out to use SageMaker's default bucket)"
                )
            if spec.output.s3_uri:
                notes.append(f"output.s3_uri: the S3 bucket {output.bucket} does not exist: submit would fail")
            elif mode is Mode.PLAN:
                notes.append(f"the S3 bucket {output.bucket} does not exist yet: submit creates it")
            else:
                self._create_bucket(session, output.bucket)
                notes.append(f"created the S3 bucket {output.bucket}")
        uploads = [uploader.upload_code(spec.code, tree, output, exists=code_exists)]
        uploads += [
            uploader.upload_channel(ch, local[ch], output, d, exists=data_exists[ch]) for ch, d in digests.items()
        ]
        if resume and mode is Mode.SUBMIT:
            self._copy_checkpoints(session, *resume, checkpoint_uri)
        copies: tuple[ChannelCopy, ...] = ()
        if mode is Mode.PLAN:
            copies = self._data_copies(session, spec, digests)
            notes += [c.line() for c in copies]
        return JobPlan(request, tuple(uploads), image, estimate(spec.resources), tree, tuple(notes), copies)

    @staticmethod
    def _data_copies(session: AwsSession, spec: JobSpec, digests: dict[str, TreeDigest]) -> tuple[ChannelCopy, ...]:
        """What each instance copies before its script starts (S3 channels listed, local ones by their digest)."""
        from botocore.exceptions import ClientError

        from cloudtrain.channels.plan import copies, listed_sizes

        sizes: dict[str, list[int] | None] = {ch: [f.size for f in d.files] for ch, d in digests.items()}
        s3 = session.client("s3")
        for ch, channel in spec.data.items():
            if channel.is_s3 and channel.mode == "file" and channel.uri:
                try:
                    sizes[ch] = listed_sizes(s3, channel.uri)
                except ClientError:  # no such bucket, no ListBucket: the plan says the size is unknown
                    sizes[ch] = None
        return tuple(copies(spec.data, sizes, spec.resources.instance_count))

    # the Backend protocol

    def plan(self, spec: JobSpec, job_name: str, *, resume_from: str | None = None) -> dict[str, Any]:
        """`--dry-run`: the request, the cost estimate and the uploads a submit would make; creates nothing.

        Only reads AWS (STS, HeadBucket, HeadObject, DescribeTrainingJob). When AWS cannot be reached
        the plan is still made, with a placeholder account and uploads of unknown state, and says so.
        """
        session = self._session()
        with translate_errors(session.where):
            notes: list[str] = []
            try:
                session.account_id()
                mode = Mode.PLAN
            except BackendUnavailable as e:
                if resume_from:
                    raise
                mode = Mode.OFFLINE
                notes.append(f"AWS not reached ({e}): uploads may already exist; account shown as {OFFLINE_ACCOUNT}")
            if mode is Mode.PLAN and self._job_exists(session, job_name):
                notes.append(f"a job named {job_name!r} exists already: submit would fail")
            plan = self._prepare(session, spec, job_name, resume_from=resume_from, mode=mode)
        data = plan.to_json() if spec.sweep is None else self._sweep_plan(spec, job_name, plan)
        data["notes"] = notes + data["notes"]
        return data

    def submit(
        self,
        spec: JobSpec,
        job_name: str,
        *,
        resume_from: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Upload what is missing, CreateTrainingJob, return at once; `last_plan` keeps the uploads made."""
        from botocore.exceptions import ClientError

        session = self._session()
        with translate_errors(session.where):
            if self._job_exists(session, job_name):  # AWS would refuse anyway; this also spares the uploads
                raise JobExists(job_name)
            plan = self._prepare(
                session, spec, job_name, resume_from=resume_from, mode=Mode.SUBMIT, on_progress=on_progress
            )
            created = time.time()
            try:
                session.client("sagemaker").create_training_job(**plan.request)
            except ClientError as e:
                if error_code(e) != "ResourceInUse":
                    raise
                # Taken since the check above: by this very request, if botocore sent it again after its answer
                # was lost (the job carries this request's tags: spec and code digests), else by someone else.
                info = self._info(session, job_name, tags=True)
                if not {t["Key"]: t["Value"] for t in plan.request["Tags"]}.items() <= info.tags.items():
                    raise JobExists(job_name) from None
                self.last_plan = plan
                return info
            self.last_plan = plan
            return created_job_info(plan.request, created)

    # sweeps: one tuning job (`tuning`)

    def _sweep_plan(self, spec: JobSpec, name: str, plan: JobPlan) -> dict[str, Any]:
        """`--dry-run` of a sweep: the tuning request (made from the job's own request), its worst case."""
        from cloudtrain.spec.ceiling import sweep_cost

        cost = sweep_cost(spec)
        data = plan.to_json()
        data["training_request"] = plan.request
        data["request"] = tuning.tuning_request(plan.request, spec, name, cost)
        data["sweep_cost"] = cost.to_json()
        return data

    def _describe_tuning(self, session: AwsSession, name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            sm = session.client("sagemaker")
            return dict(sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name))
        except ClientError as e:
            if _not_found(e) or error_code(e) == "ResourceNotFound":
                raise JobNotFound(f"no SageMaker tuning job named {quoted(name)} in {session.region}") from None
            raise

    def submit_sweep(self, spec: JobSpec, sweep_name: str, *, parents: Sequence[SweepInfo] = ()) -> SweepInfo:
        """Upload what is missing (as a submit does), then one CreateHyperParameterTuningJob; returns at once.
        Warm start's parents are named in the spec (WarmStartConfig); `parents` are already checked."""
        from botocore.exceptions import ClientError

        from cloudtrain.spec.ceiling import sweep_cost

        session = self._session()
        with translate_errors(session.where):
            try:
                self._describe_tuning(session, sweep_name)
                raise JobExists(sweep_name)  # AWS would refuse it; this also spares the uploads
            except JobNotFound:
                pass
            plan = self._prepare(session, spec, sweep_name, resume_from=None, mode=Mode.SUBMIT)
            request = tuning.tuning_request(plan.request, spec, sweep_name, sweep_cost(spec))
            try:
                session.client("sagemaker").create_hyper_parameter_tuning_job(**request)
            except ClientError as e:
                if error_code(e) != "ResourceInUse":
                    raise
                raise JobExists(sweep_name) from None
            self.last_plan = plan
        return self.sweep(sweep_name)

    def sweep(self, sweep_name: str) -> SweepInfo:
        """DescribeHyperParameterTuningJob and every page of ListTrainingJobsForHyperParameterTuningJob."""
        from cloudtrain.spec.ceiling import billed_usd
        from cloudtrain.store import JobStore

        session = self._session()
        with translate_errors(session.where):
            raw = self._describe_tuning(session, sweep_name)
            sm = session.client("sagemaker")
            summaries: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"HyperParameterTuningJobName": sweep_name, "MaxResults": 100}
            while True:
                page = sm.list_training_jobs_for_hyper_parameter_tuning_job(**kwargs)
                summaries.extend(page.get("TrainingJobSummaries", []))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        try:
            recorded = JobStore(self.settings.home).get(NAME, sweep_name).spec
        except JobNotFound:
            recorded = {}  # a tuning job cloudtrain did not start: its ranges come from AWS
        return tuning.sweep_info(raw, summaries, spec=recorded, epoch_seconds=epoch_seconds, billed=billed_usd)

    def stop_sweep(self, sweep_name: str) -> SweepInfo:
        from botocore.exceptions import ClientError

        session = self._session()
        with translate_errors(session.where):
            raw = self._describe_tuning(session, sweep_name)
            if raw["HyperParameterTuningJobStatus"] == "InProgress":
                try:
                    session.client("sagemaker").stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=sweep_name)
                except ClientError as e:
                    if error_code(e) != "ValidationException":  # it ended in between
                        raise
        return self.sweep(sweep_name)

    def _info(self, session: AwsSession, job_name: str, *, tags: bool = False) -> JobInfo:
        raw = self._describe_raw(session, job_name)
        if not tags:
            return job_info(raw, [])
        listed = session.client("sagemaker").list_tags(ResourceArn=raw["TrainingJobArn"]).get("Tags", [])
        return job_info(raw, listed)

    def describe(self, job_name: str, *, tags: bool = False) -> JobInfo:
        """One DescribeTrainingJob; `tags=True` adds a ListTags call (DescribeTrainingJob has no tags), for
        `compare`'s code digest. Without it `JobInfo.tags` is empty."""
        session = self._session()
        with translate_errors(session.where):
            return self._info(session, job_name, tags=tags)

    def list_jobs(self, limit: int = 20) -> list[JobInfo]:
        """cloudtrain's jobs (tag `cloudtrain:managed=true`), newest first, through SageMaker Search.

        AWS's Search index trails CreateTrainingJob by a few seconds, so a job submitted a moment ago
        may show up on the next call.
        """
        session = self._session()
        jobs: list[dict[str, Any]] = []
        with translate_errors(session.where):
            sm = session.client("sagemaker")
            kwargs: dict[str, Any] = {
                "Resource": "TrainingJob",
                "SearchExpression": {
                    "Filters": [{"Name": f"Tags.{MANAGED_TAG}", "Operator": "Equals", "Value": "true"}]
                },
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": max(1, min(limit, 100)),
            }
            while len(jobs) < limit:
                page = sm.search(**kwargs)
                found = [r["TrainingJob"] for r in page.get("Results", []) if "TrainingJob" in r]
                jobs.extend(j for j in found if "TuningJobArn" not in j)  # a sweep's trials are in its own row
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
            rows = [job_info(j) for j in jobs] + self._sweep_rows(session, limit)
        rows.sort(key=lambda j: j.created or 0.0, reverse=True)
        return rows[:limit]

    def _sweep_rows(self, session: AwsSession, limit: int) -> list[JobInfo]:
        """cloudtrain's sweeps (recorded in the job store at submit), one row each, from one
        ListHyperParameterTuningJobs; no call at all when cloudtrain never started one here."""
        from cloudtrain.store import JobStore

        ours = {r.name for r in JobStore(self.settings.home).list_jobs(NAME, limit) if r.info.kind == "sweep"}
        if not ours:
            return []
        page = session.client("sagemaker").list_hyper_parameter_tuning_jobs(
            SortBy="CreationTime", SortOrder="Descending", MaxResults=max(1, min(limit, 100))
        )
        return [
            tuning.sweep_row(s)
            for s in page.get("HyperParameterTuningJobSummaries", [])
            if s["HyperParameterTuningJobName"] in ours
        ]

    def stop(self, job_name: str) -> JobInfo:
        from botocore.exceptions import ClientError

        session = self._session()
        with translate_errors(session.where):
            raw = self._describe_raw(session, job_name, fresh=True)
            if raw["TrainingJobStatus"] in TERMINAL or raw["TrainingJobStatus"] == "Stopping":
                return job_info(raw, [])
            try:
                session.client("sagemaker").stop_training_job(TrainingJobName=job_name)
            except ClientError as e:
                if error_code(e) != "ValidationException":  # it ended in between
                    raise
            self._described.pop(job_name, None)
            return self._info(session, job_name)

    # logs

    def logs(self, job_name: str, *, host: str | None = None, follow: bool = False) -> Iterator[LogEvent]:
        session = self._session()
        return self._logs(session, job_name, host, follow)

    def _logs(self, session: AwsSession, job_name: str, host: str | None, follow: bool) -> Iterator[LogEvent]:
        with translate_errors(session.where):
            raw = self._describe_answered(session, job_name) if follow else self._describe_raw(session, job_name)
            client = session.client("logs")
            if not follow:
                yield from cloudwatch.read(client, job_name, host, session.budget)
                return
            pace = cloudwatch.Pace(
                self.poll_interval, self.max_poll_interval, self.status_interval, self.discover_interval
            )
            yield from cloudwatch.follow(
                client, job_name, host, raw, lambda: self._describe_raw(session, job_name), pace, session.budget
            )

    # artifacts

    def fetch_artifacts(self, job_name: str, dest: Path, *, on_progress: ProgressCallback | None = None) -> Artifacts:
        """Everything the job left, under dest (`artifacts.fetch`: staged, then swapped in)."""
        session = self._session()
        dest = Path(dest)
        with translate_errors(session.where), writing_to(dest):  # a full disk is one line, not a traceback
            uris = artifact_uris(self._describe_raw(session, job_name))
            return artifacts.fetch(
                session.client("s3"), uris, dest, workers=self.download_workers, on_progress=on_progress
            )

    def code_digest(self, info: JobInfo) -> str | None:
        """The code digest submit tagged the job with (in `info.tags` when described with tags=True)."""
        return info.tags.get(CODE_TAG)

    def evaluation(self, info: JobInfo) -> tuple[Any, str]:
        """eval_report.json from the ended job's output.tar.gz on S3, read into memory (bounded)."""
        uri = info.artifacts.get("output")
        if not info.done or not uri:
            return None, ""
        session = self._session()
        with translate_errors(session.where, "S3"):
            body = artifacts.read_output(session.client("s3"), uri)
        return (None if body is None else json_member(io.BytesIO(body), EVAL_REPORT, EVAL_REPORT_MAX_BYTES)), uri

    def sync_tensorboard(self, job_name: str, dest: Path) -> int:
        """The job's TensorBoard event files in S3 mirrored into dest (`artifacts.sync_tensorboard`). Nothing
        before SageMaker uploads any."""
        session = self._session()
        with translate_errors(session.where):
            if job_name not in self._tensorboard_uris:  # fixed at CreateTrainingJob: described once
                uris = artifact_uris(self._describe_raw(session, job_name))
                self._tensorboard_uris[job_name] = uris.get("tensorboard")
            uri = self._tensorboard_uris[job_name]
            if uri is None:
                return 0
            return artifacts.sync_tensorboard(session.client("s3"), uri, dest)
