"""A stand-in for SageMaker's training-job control plane, in front of moto, for end-to-end tests.

moto's SageMaker cannot carry an end-to-end test (see /work/shared/FACTS.md): every job is Completed
the moment it is created, nothing runs and no artifact is written, StopTrainingJob answers HTTP 500,
and a taken job name is accepted. This loopback server answers SageMaker's API itself, as AWS
documents it, and forwards every other request byte for byte to moto, so the code under test gets one
endpoint URL (AWS_ENDPOINT_URL) while S3, CloudWatch Logs, STS, ECR and IAM stay moto's.

A job really runs, on the local backend's machinery: the code tarball (`sagemaker_submit_directory`) and every
S3 channel are downloaded from S3 into a job folder, laid out per host with HostLayout, and run by the local
runner under the container contract. While it runs, each host's lines go to CloudWatch Logs
(`/aws/sagemaker/TrainingJobs`, stream `<job>/algo-N-<epoch seconds>`), every host's checkpoint folder is
synced to CheckpointConfig.S3Uri (in no set order), and at the end model.tar.gz and output.tar.gz go to
`<S3OutputPath>/<job>/output/` with S3's CRC64NVME checksum (a missing bucket fails the job). Requests are
refused as AWS refuses them (cloudtrain.backends.sagemaker.rules, the validator cloudtrain itself uses), channels
that name no object included; the chief's TensorBoard folder goes to TensorBoardOutputConfig.S3OutputPath while
it runs. Not simulated: pulling or running the TrainingImage (the job runs under this Python; with `images`, a
custom image the test engine holds runs in containers), IAM, VPC, KMS, spot capacity and real prices. As on AWS,
checkpoints already under CheckpointConfig.S3Uri are put in every host's checkpoints folder before training.

With a `toolkit` (tests/toolkit_runner.py), a job on AWS's stock TensorFlow training image runs as on
AWS instead: each host is AWS's own sagemaker-training `train` entry point in network, mount, UTS and
PID namespaces of its own, and downloads the code from S3 itself (through this endpoint); the rest
(logs, checkpoints, artifacts, statuses, failure reasons, stops) is as above.

Every request is recorded (`requests`), so a test can count calls and bytes; `interrupt(job)` plays a
spot interruption: the instances vanish (SIGKILL) and replacements start from the checkpoints in S3.

Tuning jobs (CreateHyperParameterTuningJob and the rest) are tests/control_plane_tuning.py's: each trial is a
training job of this plane, created and run as above.

What AWS does that moto does not: `log_lag` delays each host's lines in CloudWatch (a line becomes
visible that many seconds after its timestamp, as ingestion lags on AWS, differently per host), `logs` holds
CloudWatch Logs to AWS's per-account quotas, 1 MB pages and empty pages before a stream's end (LogsFront), and
`bucket_owners` gives a bucket another owner, which S3 enforces with `ExpectedBucketOwner` (403).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from cloudtrain.backends.contract import COMMUNICATION_VARIABLE, MWMS_HYPERPARAMETER, STRATEGY_VARIABLE
from cloudtrain.backends.local.backend import LocalBackend, LogTail
from cloudtrain.backends.local.layout import BACKEND as LOCAL  # the store's name for the jobs the runner supervises
from cloudtrain.backends.local.layout import CHIEF, WORKERS_FILE, HostLayout, host_names
from cloudtrain.backends.local.runner import Graces, RunPlan
from cloudtrain.backends.local.scope import MODULE as GUARD_MODULE
from cloudtrain.backends.local.scope import RUNNER_MODULE
from cloudtrain.backends.sagemaker import rules
from cloudtrain.channels import lazyfs
from cloudtrain.channels.fields import from_sagemaker_channel
from cloudtrain.channels.hosts import lay_out_channels
from cloudtrain.channels.s3cache import ChannelCache
from cloudtrain.jobs import JobInfo, Transition
from cloudtrain.spec.models import ChannelSpec
from cloudtrain.store import JobRecord
from tests.control_plane_images import ImageJobs
from tests.control_plane_tuning import Tuner
from tests.netns import HostNetwork
from tests.toolkit_runner import MODULE as TOOLKIT_RUNNER
from tests.toolkit_runner import REPO, Toolkit, ToolkitPlan, platform_environment, stand_ins

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ACCOUNT = "123456789012"  # moto's
STOCK_TF_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/tensorflow-training:")
S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/(?P<service>[^/]+)/aws4_request")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade", "content-length"})
POLL_S = 0.2
SYNC_S = 1.0
SUMMARY_FIELDS = frozenset(
    {"TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime"}
    | {"TrainingJobStatus", "SecondaryStatus"}
)
# The billable share of a spot job's time by instance type: a stand-in for the spot market, which prices each
# type apart (tests compute the savings they expect from DescribeTrainingJob's times, never from this table).
SPOT_SHARE = {"ml.m5.xlarge": 0.34, "ml.c5.xlarge": 0.29, "ml.g5.xlarge": 0.41, "ml.g4dn.xlarge": 0.27}
SPOT_SHARE_OTHER = 0.45
CRT_PATH = Path(__file__).resolve().parent.parent / ".venv-crt"  # awscrt alone (scripts/setup)
# The platform's own requests (channel downloads, FastFile reads) are signed with this key, as the uploader's
# are: they are AWS's, not cloudtrain's, and tests of what cloudtrain sends leave them out (`Request.platform`).
PLATFORM_KEY = "control-plane"
PLATFORM_KEYS = {"aws_access_key_id": PLATFORM_KEY, "aws_secret_access_key": PLATFORM_KEY}
UPLOADER = """
import json, sys
import boto3, botocore.exceptions
url, region, *files = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id="control-plane",
                  aws_secret_access_key="control-plane")
for path, uri in zip(files[::2], files[1::2]):
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        with open(path, "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="CRC64NVME")
    except botocore.exceptions.ClientError as e:
        print(json.dumps({"uri": uri, "code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}))
        sys.exit(1)
"""


CheckpointFile = tuple[str, str, Path]  # host, path below its checkpoints folder, the file


@dataclass(frozen=True)
class Request:
    """One request as the endpoint received it (SageMaker's and those forwarded to moto alike)."""

    service: str  # from the SigV4 credential scope: sagemaker, s3, logs, sts ...
    operation: str  # CreateTrainingJob, PutObject, UploadPart, GetLogEvents, GetCallerIdentity ...
    method: str
    path: str
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # lower-case names

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")

    @property
    def platform(self) -> bool:
        """Sent by the platform itself (signed with PLATFORM_KEY), not by cloudtrain or a job's code."""
        return f"Credential={PLATFORM_KEY}/" in self.headers.get("authorization", "")


class ApiError(Exception):
    """An AWS error answer: HTTP 400 with `{"__type": code, "message": ...}`, the shape botocore parses."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class _Job:
    name: str
    arn: str
    request: dict[str, Any]
    info: JobInfo  # what Describe shows: the runner's record, held back until the artifacts are in S3
    folder: Path
    tags: list[dict[str, str]]
    lock: threading.RLock = field(default_factory=threading.RLock)
    layout: HostLayout | None = None
    runner: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    tails: dict[str, LogTail] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)  # host -> its current log stream
    unshipped: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)  # stream -> lines held back (lag)
    created_streams: set[str] = field(default_factory=set)
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)  # host/checkpoint file -> (size, mtime_ns)
    synced_events: dict[str, tuple[int, int]] = field(default_factory=dict)  # TensorBoard file -> (size, mtime_ns)
    model_uploaded: bool = False
    toolkit: bool = False  # run by AWS's toolkit in namespaces (a stock-image job on a plane with a toolkit)
    mounts: ExitStack = field(default_factory=ExitStack)  # the platform's FastFile mounts, while the job runs

    @property
    def hosts(self) -> list[str]:
        return host_names(int(self.request["ResourceConfig"].get("InstanceCount", 1)))


def _split_s3(uri: str) -> tuple[str, str]:
    m = S3_URI.match(uri)
    if not m:
        raise ValueError(f"{uri!r} is not an s3:// URI")
    return m.group("bucket"), m.group("key")


def _s3_operation(method: str, path: str) -> str:
    """The S3 operation a REST request is (enough of them to count uploads and downloads)."""
    url = urlsplit(path)
    has_key = len([p for p in url.path.split("/") if p]) > 1
    query = parse_qs(url.query, keep_blank_values=True)
    if method == "PUT" and has_key:
        return "UploadPart" if "uploadId" in query else "PutObject"
    if method == "POST" and has_key:
        return "CompleteMultipartUpload" if "uploadId" in query else "CreateMultipartUpload"
    names = {"GET": ("ListObjects", "GetObject"), "HEAD": ("HeadBucket", "HeadObject"), "PUT": ("CreateBucket",) * 2}
    return names.get(method, (method, method))[has_key]


class ControlPlane:
    """SageMaker's training-job API on 127.0.0.1, moto behind it for everything else.

    `run_jobs = False` holds new jobs in Starting (no capacity), for tests that only look at requests.
    With a `toolkit`, stock-image jobs run under that version of AWS's sagemaker-training toolkit.
    `images = ImageJobs(...)` runs custom-image jobs in their image on a Docker engine (control_plane_images).
    """

    def __init__(self, moto_url: str, home: Path, *, region: str = "us-east-1", toolkit: Toolkit | None = None) -> None:
        self.moto_url, self.region = moto_url.rstrip("/"), region
        self.toolkit = toolkit
        self.home = Path(home)
        self.local = LocalBackend(self.home)  # its store and stop/refresh logic; jobs live in <home>/jobs/<job>
        self.run_jobs = True
        self.checkpoint_order: Callable[[list[CheckpointFile]], list[CheckpointFile]] = _shuffled
        self.log_lag: dict[str, float] = {}  # host -> seconds before its lines are visible in CloudWatch
        self.logs = LogsFront()  # CloudWatch Logs' quotas, 1 MB pages and empty pages, as AWS has them
        self.bucket_owners: dict[str, str] = {}  # bucket -> owning account, where it is not ACCOUNT
        self.images: ImageJobs | None = None
        self._jobs: dict[str, _Job] = {}
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._ops = {
            "CreateTrainingJob": self._create,
            "DescribeTrainingJob": lambda p: self._describe(self._job(p["TrainingJobName"])),
            "ListTrainingJobs": self._list,
            "Search": self._search,
            "StopTrainingJob": self._stop,
            "ListTags": lambda p: {"Tags": self._by_arn(p["ResourceArn"]).tags},
        }
        self.tuner = Tuner(self)  # tuning jobs whose trials are this plane's training jobs (control_plane_tuning)
        self._ops.update(self.tuner.ops())
        self._clients: dict[str, Any] = {}

    # --- the server ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ControlPlane:
        handler = type("Handler", (_Handler,), {"plane": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="sagemaker-control-plane", daemon=True).start()
        return self

    def close(self) -> None:
        """Kill every job's runner and workers, wait for the job threads, stop serving."""
        self._closing.set()
        for job in list(self._jobs.values()):
            with job.lock:
                self._kill(job)
        for job in list(self._jobs.values()):
            if job.thread is not None:
                job.thread.join(30)
            job.mounts.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def calls(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    def record(self, method: str, path: str, headers: Any, body: bytes) -> None:
        scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
        service = scope.group("service") if scope else ""
        target = headers.get("X-Amz-Target", "")
        if target:
            operation = target.rpartition(".")[2]
        elif service == "s3":
            operation = _s3_operation(method, path)
        else:  # query protocol (STS, IAM): Action=... in the form body
            operation = parse_qs(body.decode("utf-8", "replace")).get("Action", [method])[0]
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self._requests.append(Request(service, operation, method, path, body, lower))

    def refused_by_owner(self, method: str, path: str, headers: Any) -> bytes | None:
        """S3's 403 for a request to a bucket of another account: one whose ExpectedBucketOwner names someone
        else, and any HeadBucket (the other account grants us no ListBucket); None to forward it."""
        scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
        if not scope or scope.group("service") != "s3":
            return None
        bucket = urlsplit(path).path.lstrip("/").split("/", 1)[0]
        owner = self.bucket_owners.get(bucket, ACCOUNT)
        expected = headers.get("x-amz-expected-bucket-owner")
        if (expected and expected != owner) or (owner != ACCOUNT and _s3_operation(method, path) == "HeadBucket"):
            return b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        return None

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """The request to moto unchanged (body byte for byte, Host and signature kept); its answer back."""
        target = urlsplit(self.moto_url)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(method, path, body=body or None, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            back = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP - {"content-length"}]
            if method != "HEAD" and not any(k.lower() == "content-length" for k, _ in back):
                back.append(("Content-Length", str(len(data))))
            return resp.status, back, data
        finally:
            conn.close()

    def moto(self, service: str) -> Any:
        """A client straight to moto: the control plane's own traffic is not the code under test's."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(
                    service,
                    endpoint_url=self.moto_url,
                    region_name=self.region,
                    aws_access_key_id="control-plane",
                    aws_secret_access_key="control-plane",
                )
            return self._clients[service]

    # --- SageMaker's API ---------------------------------------------------------------------------

    def sagemaker(self, action: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            op = self._ops.get(action)
            if op is None:
                raise ApiError("UnknownOperationException", f"{action} is not supported by this control plane")
            params = json.loads(body or b"{}")
            self._validate(action, params)
            return 200, op(params)
        except ApiError as e:
            return 400, {"__type": e.code, "message": str(e)}

    def _validate(self, action: str, params: dict[str, Any]) -> None:
        """AWS's checks before anything else: the service model's constraints and AWS's documented rules."""
        try:
            rules.check(action, params)
        except rules.Refused as e:
            raise ApiError("ValidationException", str(e)) from None

    def _job(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            raise ApiError("ValidationException", "Requested resource not found.")
        return job

    def _by_arn(self, arn: str) -> _Job:
        for job in list(self._jobs.values()):
            if job.arn == arn:
                return job
        raise ApiError("ValidationException", f"Requested resource not found: {arn}")

    def _create(self, p: dict[str, Any]) -> dict[str, Any]:
        name = p["TrainingJobName"]
        self._check_channels(p)
        arn = f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:training-job/{name.lower()}"
        now = time.time()
        resources = p["ResourceConfig"]
        info = JobInfo(
            name=name,
            backend=LOCAL,
            status="InProgress",
            secondary_status="Starting",
            created=now,
            instance_type=resources.get("InstanceType", ""),
            instance_count=int(resources.get("InstanceCount", 1)),
            transitions=(Transition("Starting", now, None, "Launching requested ML instances"),),
        )
        job = _Job(name, arn, p, info, self.home / "jobs" / name, list(p.get("Tags", [])))
        with self._lock:
            if name in self._jobs:
                raise ApiError(
                    "ResourceInUse",
                    "Training job names must be unique within an AWS account and region, and a training job "
                    f"with this name already exists ({self._jobs[name].arn})",
                )
            self._jobs[name] = job
        self.local.store.create(JobRecord(info))
        if self.run_jobs:
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"job-{name}", daemon=True)
            job.thread.start()
        return {"TrainingJobArn": arn}

    def _check_channels(self, p: dict[str, Any]) -> None:
        """Every S3Prefix channel must name at least one object, or AWS refuses the job as it is created."""
        s3 = self.moto("s3")
        for channel in p.get("InputDataConfig", []):
            uri = channel["DataSource"].get("S3DataSource", {}).get("S3Uri")
            if uri is None or channel["DataSource"]["S3DataSource"].get("S3DataType") != "S3Prefix":
                continue
            bucket, prefix = _split_s3(uri)
            try:
                found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)
            except s3.exceptions.NoSuchBucket:
                found = 0
            if not found:
                raise ApiError("ValidationException", empty_channel(uri, self.region, p["RoleArn"]))

    def _describe(self, job: _Job) -> dict[str, Any]:
        info = job.info
        out = {k: v for k, v in job.request.items() if k != "Tags"}  # AWS echoes the request's settings
        out.setdefault("EnableManagedSpotTraining", False)
        transitions = [
            {"Status": t.status, "StartTime": t.start, "StatusMessage": t.message}
            | ({"EndTime": t.end} if t.end is not None else {})
            for t in info.transitions
        ]
        times = [t.start for t in info.transitions] + [t.end for t in info.transitions if t.end is not None]
        out.update(
            TrainingJobArn=job.arn,
            TrainingJobStatus=info.status,
            SecondaryStatus=info.secondary_status,
            CreationTime=info.created,
            LastModifiedTime=max(times),
            SecondaryStatusTransitions=transitions,
        )
        started = next((t.start for t in info.transitions if t.status == "Downloading"), None)
        if started is not None:
            out["TrainingStartTime"] = started
        if info.failure_reason:
            out["FailureReason"] = info.failure_reason
        if info.ended is not None and started is not None:  # a job stopped before it started bills nothing
            seconds = max(1, math.ceil(info.ended - started))
            spot = (
                SPOT_SHARE.get(info.instance_type, SPOT_SHARE_OTHER)
                if job.request.get("EnableManagedSpotTraining")
                else 0
            )
            out.update(
                TrainingEndTime=info.ended,
                TrainingTimeInSeconds=seconds,
                BillableTimeInSeconds=max(1, round(seconds * spot)) if spot else seconds,
            )
        if info.metrics:
            stamp = info.ended or out["LastModifiedTime"]
            out["FinalMetricDataList"] = [
                {"MetricName": k, "Value": v, "Timestamp": stamp} for k, v in sorted(info.metrics.items())
            ]
        if job.model_uploaded:
            out["ModelArtifacts"] = {"S3ModelArtifacts": self._output_uri(job, "model.tar.gz")}
        return out

    def _list(self, p: dict[str, Any]) -> dict[str, Any]:
        jobs = [j for j in list(self._jobs.values()) if p.get("NameContains", "") in j.name]
        if p.get("StatusEquals"):
            jobs = [j for j in jobs if j.info.status == p["StatusEquals"]]
        key = {"Name": lambda j: j.name, "Status": lambda j: j.info.status}.get(
            p.get("SortBy", "CreationTime"), lambda j: j.info.created
        )
        jobs.sort(key=key, reverse=p.get("SortOrder", "Ascending") == "Descending")
        page, token = _page(jobs, p, default=10)
        summaries = [{k: v for k, v in self._describe(j).items() if k in SUMMARY_FIELDS} for j in page]
        return {"TrainingJobSummaries": summaries} | ({"NextToken": token} if token else {})

    def _search(self, p: dict[str, Any]) -> dict[str, Any]:
        """Search over TrainingJob with plain Filters (Tags.<key> or a top-level field), And/Or, sort and pages."""
        if p["Resource"] != "TrainingJob":
            raise ApiError("ValidationException", f"this control plane searches TrainingJob only, not {p['Resource']}")
        expression = p.get("SearchExpression", {})
        if expression.get("NestedFilters") or expression.get("SubExpressions"):
            raise ApiError("ValidationException", "this control plane supports Filters only")
        records = [self._describe(j) | {"Tags": j.tags} for j in list(self._jobs.values())]
        combine = any if expression.get("Operator") == "Or" else all
        filters = expression.get("Filters", [])
        records = [r for r in records if not filters or combine(_matches(r, f) for f in filters)]
        sort_by = p.get("SortBy", "CreationTime")
        records.sort(key=lambda r: r.get(sort_by) or 0, reverse=p.get("SortOrder", "Descending") == "Descending")
        page, token = _page(records, p, default=10)
        return {"Results": [{"TrainingJob": r} for r in page]} | ({"NextToken": token} if token else {})

    def _stop(self, p: dict[str, Any]) -> dict[str, Any]:
        job = self._job(p["TrainingJobName"])
        with job.lock:
            if job.info.status != "InProgress":
                raise ApiError(
                    "ValidationException",
                    f"The request was rejected because the training job is in status {job.info.status}.",
                )
            if job.thread is None:  # held for capacity: nothing started, it just ends
                self.local.store.transition(LOCAL, job.name, "Stopping", status="Stopping", message="Stopping")
                record = self.local.store.transition(LOCAL, job.name, "Stopped", status="Stopped", message="Stopped")
                job.info = record.info
                return {}
            info = self.local.stop(job.name)  # Stopping, and SIGTERM to the runner (if it has started)
            if not info.done:
                job.info = info
        return {}

    # --- running a job -----------------------------------------------------------------------------

    def _run(self, job: _Job) -> None:
        """The job's life: download and lay out, run, and meanwhile ship logs and sync checkpoints."""
        try:
            self._prepare(job)
        except Exception as e:
            reason = f"ClientError: {type(e).__name__}: {e}"[:1024]
            record = self.local.store.transition(LOCAL, job.name, "Failed", status="Failed", failure_reason=reason)
            job.info = record.info
            return
        with job.lock:
            if not self._closing.is_set():
                self._start_runner(job)
        next_sync = 0.0
        while not self._closing.wait(POLL_S):
            with job.lock:
                info = self.local.describe(job.name)  # also notices a runner that died
                self._ship_logs(job)
                if info.done or time.monotonic() >= next_sync:
                    self._sync_checkpoints(job)
                    self._sync_tensorboard(job)
                    next_sync = time.monotonic() + SYNC_S
                if info.done:
                    failure = self._upload_artifacts(job)
                    if failure is not None:
                        info = _upload_failed(info, failure)
                    if job.runner is not None:
                        job.runner.wait()
                job.info = info
                if info.done:
                    break
        job.mounts.close()
        while self._ship_logs(job) and not self._closing.wait(POLL_S):  # lagging lines arrive after the end
            pass

    def _prepare(self, job: _Job) -> None:
        """Download the code and the channels from S3 and lay out one /opt/ml per host, as an instance does."""
        job.info = self.local.store.transition(LOCAL, job.name, "Downloading", message="Downloading input data").info
        s3 = self.moto("s3")
        hyperparameters = dict(job.request.get("HyperParameters", {}))
        if "sagemaker_submit_directory" not in hyperparameters:
            raise ValueError("no sagemaker_submit_directory: this control plane runs script-mode jobs only")
        job.folder.mkdir(parents=True)
        sourcedir = job.folder / "sourcedir.tar.gz"
        bucket, key = _split_s3(json.loads(hyperparameters["sagemaker_submit_directory"]))
        s3.download_file(bucket, key, str(sourcedir))
        channels: dict[str, ChannelSpec] = {}
        for channel in job.request.get("InputDataConfig", []):
            source = channel["DataSource"].get("S3DataSource", {})
            if source.get("S3DataType") != "S3Prefix":
                raise ValueError(f"channel {channel['ChannelName']}: only S3Prefix channels are supported here")
            channels[channel["ChannelName"]] = from_sagemaker_channel(channel)
        job.layout = HostLayout(job.hosts, hyperparameters, channels, sourcedir)
        image = job.request["AlgorithmSpecification"].get("TrainingImage", "")
        job.toolkit = self.toolkit is not None and bool(STOCK_TF_IMAGE.match(image))
        if job.toolkit:
            self._plan_toolkit(job)
        self._lay_out_hosts(job)
        environment = job.request.get("Environment", {})
        graces = Graces.from_environ(os.environ)
        RunPlan(
            job_name=job.name,
            hosts=tuple(job.hosts),
            max_runtime=float(job.request["StoppingCondition"].get("MaxRuntimeInSeconds", 86400)),
            strategy="multi_worker_mirrored"
            if hyperparameters.get(MWMS_HYPERPARAMETER) == "true"
            else environment.get(STRATEGY_VARIABLE, "none"),
            communication=environment.get(COMMUNICATION_VARIABLE, "auto"),
            metrics=tuple(
                (m["Name"], m["Regex"]) for m in job.request["AlgorithmSpecification"].get("MetricDefinitions", [])
            ),
            stop_grace=graces.stop,  # the test's CLOUDTRAIN_STOP_GRACE (AWS's own grace is 120 s)
            failure_grace=graces.failure,
        ).save(job.folder)
        if self.images is not None:  # a custom image the test engine holds runs in containers of it
            self.images.prepare(job.folder, job.name, job.request, [])  # channels are files in the host folders

    def _plan_toolkit(self, job: _Job) -> None:
        """Namespaces unique to this job, and each host's environment: the image's, the platform's, stand-ins."""
        assert self.toolkit is not None and self._server is not None
        HostNetwork.new(job.hosts).save(job.folder)
        platform = platform_environment(job.name, job.arn, self.region)
        base = {h: self.toolkit.image_environment(h) | stand_ins() | platform for h in job.hosts}
        host, port = self._server.server_address[:2]
        plan = ToolkitPlan(base, dict(job.request.get("Environment", {})), (str(host), port))
        plan.save(job.folder)

    def _lay_out_hosts(self, job: _Job) -> None:
        """Fresh host folders, each with the checkpoints already in S3 (SageMaker restores them before training).

        For the toolkit, /opt/ml/code starts empty (the toolkit downloads the code itself) and the resource
        config is an instance's: the request's instance type, and eth0.
        """
        assert job.layout is not None
        job.mounts.close()  # the lost instances' FastFile mounts
        shutil.rmtree(job.folder / "hosts", ignore_errors=True)
        (job.folder / WORKERS_FILE).unlink(missing_ok=True)
        uri = job.request.get("CheckpointConfig", {}).get("S3Uri")
        for host in job.hosts:
            job.layout.create(job.folder / "hosts" / host, host)
            if job.toolkit:
                self._as_on_an_instance(job, host)
            if uri:
                _download_prefix(self.moto("s3"), uri, job.folder / "hosts" / host / "checkpoints")
        self._fill_channels(job)
        job.synced = {}

    def _fill_channels(self, job: _Job) -> None:
        """Each host's channels as the platform gives them: File mode downloaded (each object once into this
        plane's cache), sharded by key, FastFile mounted and fetched on first read. The platform's reads go
        through this plane's own front, so a test sees (and counts) them in `calls`."""
        assert job.layout is not None
        front = {"endpoint_url": self.url, "region": self.region}
        platform = job.folder / "platform"
        mounts = lay_out_channels(
            job.layout.channels,
            [job.folder / "hosts" / host for host in job.hosts],
            cache=ChannelCache(self.home / "s3-cache"),
            manifests=platform,
            s3=lambda: boto3.client("s3", endpoint_url=self.url, region_name=self.region, **PLATFORM_KEYS),
            aws=front,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_SESSION_TOKEN", "AWS_PROFILE")}
        env.update(AWS_ACCESS_KEY_ID=PLATFORM_KEY, AWS_SECRET_ACCESS_KEY=PLATFORM_KEY)
        for mount in mounts:
            log = platform / f"{Path(mount.manifest).stem}.log"
            served = lazyfs.mounted(Path(mount.manifest), Path(mount.mountpoint), log, env)
            job.mounts.enter_context(served)

    def _as_on_an_instance(self, job: _Job, host: str) -> None:
        """No code yet (the toolkit downloads it) and the resourceconfig.json an instance gets from SageMaker."""
        host_dir = job.folder / "hosts" / host
        shutil.rmtree(host_dir / "code")
        instance_type, group = job.request["ResourceConfig"]["InstanceType"], "homogeneousCluster"
        resources = {
            "current_host": host,
            "current_instance_type": instance_type,
            "current_group_name": group,
            "hosts": job.hosts,
            "instance_groups": [{"instance_group_name": group, "instance_type": instance_type, "hosts": job.hosts}],
            "network_interface_name": "eth0",
        }
        (host_dir / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resources))

    def _start_runner(self, job: _Job) -> None:
        """The local runner with the request's Environment; a new set of log streams, as a container start makes.

        A toolkit job's runner (tests/toolkit_runner.py) gives each host a clean environment of its own.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(job.request.get("Environment", {}))
        env["TMPDIR"] = str(job.folder / "tmp")  # the workers' scratch folders go away with the job folder
        (job.folder / "tmp").mkdir(exist_ok=True)
        command = [sys.executable, "-m", RUNNER_MODULE, str(job.folder)]
        if job.toolkit:
            command = [sys.executable, "-m", TOOLKIT_RUNNER, "--in-place-of", RUNNER_MODULE, str(job.folder)]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        elif self.images is not None and (module := self.images.runner_module(job.folder)):
            command = [sys.executable, "-m", module, str(job.folder)]
            env.update(self.images.env)
        with open(job.folder / "runner.log", "ab") as log:
            job.runner = subprocess.Popen(
                command,
                cwd=job.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.local.store.set_pid(LOCAL, job.name, job.runner.pid)
        previous = max((int(s.rsplit("-", 1)[1]) for s in job.streams.values()), default=0)
        started = max(int(time.time()), previous + 1)
        job.streams = {host: f"{job.name}/{host}-{started}" for host in job.hosts}

    def _ship_logs(self, job: _Job) -> bool:
        """New lines of each host's log to its CloudWatch stream (blank lines dropped: CloudWatch refuses them),
        each once its host's `log_lag` has passed; True while some are still held back."""
        logs = self.moto("logs") if job.streams else None
        for host in job.streams:
            tail = job.tails.setdefault(host, LogTail(host, job.folder / "logs" / f"{host}.jsonl"))
            held = job.unshipped.setdefault(job.streams[host], deque())
            held.extend({"timestamp": int(e.timestamp * 1000), "message": e.message} for e in tail.read() if e.message)
        for stream, held in job.unshipped.items():
            visible = (time.time() - self.log_lag.get(stream.rsplit("/", 1)[1].rsplit("-", 1)[0], 0.0)) * 1000
            events = []
            while held and held[0]["timestamp"] <= visible:
                events.append(held.popleft())
            if not events or logs is None:
                continue
            if stream not in job.created_streams:
                with suppress(logs.exceptions.ResourceAlreadyExistsException):
                    logs.create_log_group(logGroupName=LOG_GROUP)
                logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
                job.created_streams.add(stream)
            for i in range(0, len(events), 1000):
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[i : i + 1000])
        return any(job.unshipped.values())

    def _sync_checkpoints(self, job: _Job) -> None:
        """New or changed files of every host's checkpoint folder to CheckpointConfig.S3Uri, in no set order.

        As on SageMaker, each host's /opt/ml/checkpoints goes to the same prefix (a file two hosts write
        lands twice, the later one wins), and nothing orders the uploads: TensorFlow's `checkpoint` index
        may reach S3 before the files it names, and a reader of S3 meanwhile sees a torn checkpoint.
        `checkpoint_order` picks the order (shuffled by default). Not simulated: `interrupt` waits for a
        pass to end (it takes the job's lock), where a real interruption may cut one. Temporary (`*_temp*`)
        files are skipped.
        """
        uri = job.request.get("CheckpointConfig", {}).get("S3Uri")
        if not uri:
            return
        bucket, prefix = _split_s3(uri)
        key = (prefix.rstrip("/") + "/") if prefix.strip("/") else ""
        found = []
        for host in job.hosts:
            local = job.folder / "hosts" / host / "checkpoints"
            if local.is_dir():
                found += [(host, p.relative_to(local).as_posix(), p) for p in sorted(local.rglob("*"))]
        s3 = self.moto("s3")
        for host, rel, path in self.checkpoint_order([f for f in found if "_temp" not in f[1]]):
            try:
                stat = path.stat()
                if not path.is_file() or job.synced.get(f"{host}/{rel}") == (stat.st_size, stat.st_mtime_ns):
                    continue
                data = path.read_bytes()
            except FileNotFoundError:  # an old checkpoint removed by max_to_keep meanwhile
                continue
            s3.put_object(Bucket=bucket, Key=key + rel, Body=data)
            job.synced[f"{host}/{rel}"] = (stat.st_size, stat.st_mtime_ns)

    def _sync_tensorboard(self, job: _Job) -> None:
        """New or grown files of the chief's TensorBoardOutputConfig.LocalPath to `<S3OutputPath>/<job>/
        tensorboard-output/`, where SageMaker uploads them while the job runs (the SDK's
        `latest_job_tensorboard_artifacts_path`); each changed file is put whole again."""
        config = job.request.get("TensorBoardOutputConfig")
        local_path = PurePosixPath((config or {}).get("LocalPath") or "/opt/ml/output/tensorboard")
        if not config or not local_path.is_relative_to("/opt/ml"):
            return
        local = job.folder / "hosts" / CHIEF / local_path.relative_to("/opt/ml")
        bucket, prefix = _split_s3(config["S3OutputPath"])
        key = "/".join(p for p in (prefix.strip("/"), job.name, "tensorboard-output") if p)
        for path in sorted(local.rglob("*")) if local.is_dir() else []:
            rel = path.relative_to(local).as_posix()
            try:
                stat = path.stat()
                if not path.is_file() or job.synced_events.get(rel) == (stat.st_size, stat.st_mtime_ns):
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            self.moto("s3").put_object(Bucket=bucket, Key=f"{key}/{rel}", Body=data)
            job.synced_events[rel] = (stat.st_size, stat.st_mtime_ns)

    def _output_uri(self, job: _Job, name: str) -> str:
        return f"{job.request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job.name}/output/{name}"

    def _upload_artifacts(self, job: _Job) -> str | None:
        """The runner's model.tar.gz and output.tar.gz (made for Completed and Stopped jobs) to S3, as SageMaker
        writes them: each with a full-object CRC64NVME (S3's default checksum) that fetch-model can verify.

        botocore computes CRC64NVME only with awscrt, which the tests keep out of their own process (botocore
        would load it into every client): the upload runs in a child with `.venv-crt` on its path. One
        PutObject each: moto (without awscrt) cannot combine a multipart upload's CRC64NVME parts. Returns
        the job's failure reason when S3 refuses (a missing bucket), as SageMaker's "Artifact upload failed".
        """
        files = [(job.folder / n, self._output_uri(job, n)) for n in ("model.tar.gz", "output.tar.gz")]
        files = [(path, uri) for path, uri in files if path.is_file()]
        if not files:
            return None
        if not CRT_PATH.is_dir():
            return f"ClientError: Artifact upload failed: {CRT_PATH} is missing (scripts/setup makes it)"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
            "PYTHONPATH": str(CRT_PATH),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        args = [sys.executable, "-c", UPLOADER, self.moto_url, self.region, *(str(x) for pair in files for x in pair)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            refused = json.loads(done.stdout) if done.stdout.startswith("{") else None
            if refused is None:
                raise RuntimeError(f"artifact upload failed: {done.stderr[-2000:]}")
            return (
                f"ClientError: Artifact upload failed:Unable to upload file to {refused['uri']} "
                f"({refused['code']}: {refused['message']})"
            )
        job.model_uploaded = True
        return None

    def _kill(self, job: _Job) -> None:
        """SIGKILL the runner's guard, the runner's and every worker's process group, and wait for them to go.

        The guard goes first, as everything on an instance does: left alone, it would see its runner die, end
        the job's scope (a replacement's workers too) and record the job as failed.
        """
        for pid in _guard_pids(job.folder):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if job.runner is not None and job.runner.poll() is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(job.runner.pid, signal.SIGKILL)
            job.runner.wait()
        with suppress(OSError, ValueError):
            pids = [int(p) for p in json.loads((job.folder / WORKERS_FILE).read_text()).values()]
            for pid in pids:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
        network = HostNetwork.load(job.folder)
        if network is not None:  # a toolkit job: its namespaces go with its processes
            network.delete()
        if self.images is not None:
            self.images.remove(job.folder, job.name)

    def interrupt(self, job_name: str) -> None:
        """A spot interruption: the instances vanish mid-training and replacements resume from S3's checkpoints.

        Records `Interrupted` (then `Starting`), lays every host out afresh, downloads the synced
        checkpoints into each host's checkpoints folder, and starts the runner again (new log streams).
        """
        job = self._jobs[job_name]
        with job.lock:
            if job.runner is None or job.runner.poll() is not None or job.info.done:
                raise RuntimeError(f"job {job_name} is not running")
            self._kill(job)
            self._ship_logs(job)  # what the lost instances had written
            store = self.local.store
            store.transition(LOCAL, job.name, "Interrupted", message="Spot instances interrupted: capacity reclaimed")
            job.info = store.transition(
                LOCAL, job.name, "Starting", message="Launching replacement instances after a spot interruption"
            ).info
            self._lay_out_hosts(job)
            self._start_runner(job)


def _upload_failed(info: JobInfo, reason: str) -> JobInfo:
    """An ended job whose artifacts S3 refused: SageMaker fails it after Uploading, with the reason."""
    kept = tuple(t for t in info.transitions if t.status not in ("Completed", "Stopped"))
    failed = Transition("Failed", info.ended or time.time(), None, "Training job failed")
    return replace(info, status="Failed", secondary_status="Failed", failure_reason=reason, transitions=(*kept, failed))


def _guard_pids(folder: Path) -> list[int]:
    """The processes running the local runner's guard (`python -m cloudtrain.backends.local.scope FOLDER`)."""
    wanted = [b"-m", GUARD_MODULE.encode(), str(folder).encode()]
    found = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.name.isdigit() and all(part in argv for part in wanted):
                found.append(int(entry.name))
    return found


def _shuffled(files: list[CheckpointFile]) -> list[CheckpointFile]:
    return random.sample(files, len(files))


def _matches(record: dict[str, Any], f: dict[str, str]) -> bool:
    name, op, want = f["Name"], f.get("Operator", "Equals"), f.get("Value")
    if name.startswith("Tags."):
        value = {t["Key"]: t["Value"] for t in record["Tags"]}.get(name[5:])
    else:
        value = record.get(name)
    tests = {
        "Equals": lambda: value is not None and str(value) == want,
        "NotEquals": lambda: str(value) != want,
        "Contains": lambda: value is not None and str(want) in str(value),
        "Exists": lambda: value is not None,
        "NotExists": lambda: value is None,
    }
    if op not in tests:
        raise ApiError("ValidationException", f"operator {op} is not supported by this control plane")
    return tests[op]()


def _page(items: list[Any], p: dict[str, Any], *, default: int) -> tuple[list[Any], str | None]:
    start = int(p.get("NextToken") or 0)
    end = start + int(p.get("MaxResults", default))
    return items[start:end], str(end) if end < len(items) else None


def _download_prefix(s3: Any, uri: str, dest: Path) -> None:
    """Every object under an S3Prefix URI, at its path below the prefix (as File mode lays channels out)."""
    bucket, prefix = _split_s3(uri)
    dest.mkdir(parents=True, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            rel = item["Key"][len(prefix) :].lstrip("/")
            if not rel or rel.endswith("/") or ".." in PurePosixPath(rel).parts:
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(dest / rel))


def _alive(pid: int) -> bool:
    """Whether a process still runs (a zombie waiting for init to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class _Handler(BaseHTTPRequestHandler):
    """One request: SageMaker's answered by the control plane, the rest forwarded to moto."""

    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pools expect
    plane: ControlPlane

    def _serve(self) -> None:
        body = self._body()
        self.plane.record(self.command, self.path, self.headers, body)
        if self.headers.get("X-Amz-Target", "").startswith("SageMaker."):
            status, payload = self.plane.sagemaker(self.headers["X-Amz-Target"].partition(".")[2], body)
            data = json.dumps(payload).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))]
        elif (refusal := self.plane.refused_by_owner(self.command, self.path, self.headers)) is not None:
            status, data = 403, b"" if self.command == "HEAD" else refusal
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))]
        elif not self.plane.logs.allow(operation := self.headers.get("X-Amz-Target", "").rpartition(".")[2]):
            status, headers, data = LogsFront.throttling()
        else:
            status, headers, data = self.plane.forward(self.command, self.path, self.headers, body)
            if operation == "GetLogEvents" and status == 200:
                data = self.plane.logs.page(body, data)
                headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "x-amz-crc32")]
                headers.append(("Content-Length", str(len(data))))
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded instead
        pass


def empty_channel(uri: str, region: str, role: str) -> str:
    """AWS's answer to CreateTrainingJob when an S3Prefix channel names no object (bucket or prefix missing).

    SageMaker lists every S3Prefix channel when the job is created and refuses it with this
    ValidationException (its text as AWS's users have quoted it); the job is never made.
    """
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    return (
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
        f"exists in the selected region ({region}), that objects exist under that S3 prefix, and that the role "
        f'"{role}" has "s3:ListBucket" permissions on bucket "{bucket}".'
    )


# CloudWatch Logs' request quotas per account and Region (docs/quotas.md): above them AWS throttles.
LOGS_TPS = {"GetLogEvents": 10.0, "DescribeLogStreams": 5.0, "FilterLogEvents": 5.0}
PAGE_EVENTS = 10_000
PAGE_BYTES = 1_048_576  # a GetLogEvents page: at most 10,000 events or 1 MB, each event its message + 26 bytes
EVENT_OVERHEAD = 26


class LogsFront:
    """CloudWatch Logs as strict as AWS where moto is kinder, for the calls a follower makes.

    - Throttling: GetLogEvents, DescribeLogStreams and FilterLogEvents share AWS's per-account quotas
      (`LOGS_TPS`, a token bucket of one second's calls each, whoever calls); above them, ThrottlingException.
    - Pages: a GetLogEvents page holds at most 10,000 events *or 1 MB* (moto caps only the count).
    - Empty pages before the end: every `empty_every`-th GetLogEvents with lines behind its position is answered
      with no events and a token that moved (the same position, spelt anew), as CloudWatch "can return empty
      results while there are more log events available through the token".
    `throttled` counts the refusals, so a test can tell the quota was met rather than assumed.
    """

    def __init__(self, empty_every: int = 3) -> None:
        self.empty_every = empty_every
        self.throttled = 0
        self._tokens = dict(LOGS_TPS)
        self._stamp = dict.fromkeys(LOGS_TPS, time.monotonic())
        self._with_lines = 0
        self._lock = threading.Lock()

    def allow(self, operation: str) -> bool:
        """Whether the account's quota has room for one more `operation` call now (always, for other calls)."""
        if operation not in LOGS_TPS:
            return True
        with self._lock:
            now = time.monotonic()
            rate = LOGS_TPS[operation]
            self._tokens[operation] = min(rate, self._tokens[operation] + (now - self._stamp[operation]) * rate)
            self._stamp[operation] = now
            if self._tokens[operation] >= 1.0:
                self._tokens[operation] -= 1.0
                return True
            self.throttled += 1
            return False

    @staticmethod
    def throttling() -> tuple[int, list[tuple[str, str]], bytes]:
        data = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return 400, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))], data

    def page(self, request: bytes, answer: bytes) -> bytes:
        """moto's GetLogEvents answer made AWS's: cut at 1 MB, or now and then empty before the end."""
        page = json.loads(answer)
        events = page.get("events", [])
        token = json.loads(request or b"{}").get("nextToken")
        start = int(token[2:]) + 1 if token else 0  # moto's tokens: f/<index of the last event returned>
        if events:
            with self._lock:
                self._with_lines += 1
                empty = self.empty_every > 0 and self._with_lines % self.empty_every == 0
            if empty:  # nothing this time, and a token that moved: the same position spelt anew
                position = start - 1
                spelt = (
                    f"f/{position}" if token is None or len(token) > 2 + len(str(position)) else f"f/{position:056d}"
                )
                return json.dumps({"events": [], "nextForwardToken": spelt, "nextBackwardToken": spelt}).encode()
            size, kept = 0, 0
            for event in events[:PAGE_EVENTS]:
                size += len(event["message"].encode()) + EVENT_OVERHEAD
                if size > PAGE_BYTES:
                    break
                kept += 1
            if kept < len(events):
                page["events"] = events[:kept]
                page["nextForwardToken"] = f"f/{start + kept - 1:056d}"
        elif token and page.get("nextForwardToken", "")[2:].lstrip("0") == token[2:].lstrip("0"):
            page["nextForwardToken"] = token  # at the end: the token comes back as it was sent, as AWS's does
        return json.dumps(page).encode()
