"""A stand-in for SageMaker's training-job control plane, in front of moto, for end-to-end tests.

moto's SageMaker cannot carry an end-to-end test (see /work/shared/FACTS.md): every job is Completed
the moment it is created, nothing runs and no artifact is written, StopTrainingJob answers HTTP 500,
and a taken job name is accepted. This loopback server answers SageMaker's API itself, as AWS
documents it, and forwards every other request byte for byte to moto, so the code under test gets one
endpoint URL (AWS_ENDPOINT_URL) while S3, CloudWatch Logs, STS, ECR and IAM stay moto's.

A job really runs, on the local backend's machinery: the code tarball (`sagemaker_submit_directory`)
and every S3 channel are downloaded from S3 into a job folder, laid out per host with HostLayout, and
run by the local runner under the container contract. While it runs, each host's lines go to
CloudWatch Logs (`/aws/sagemaker/TrainingJobs`, stream `<job>/algo-N-<epoch seconds>`), the chief's
checkpoint folder is synced to CheckpointConfig.S3Uri, and at the end model.tar.gz and output.tar.gz
go to `<S3OutputPath>/<job>/output/`. Not simulated: pulling or running the TrainingImage (the job
runs under this Python; with `images`, a custom image the test engine holds runs in containers),
IAM, VPC, KMS, spot capacity and real prices. As on AWS, checkpoints
already under CheckpointConfig.S3Uri are put in every host's checkpoints folder before training.

Every request is recorded (`requests`), so a test can count calls and bytes; `interrupt(job)` plays a
spot interruption: the instances vanish (SIGKILL) and replacements start from the checkpoints in S3.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from cloudtrain.backends.base import JobInfo, Transition
from cloudtrain.backends.local import HostLayout, LocalBackend, LogTail
from cloudtrain.backends.local_runner import CHIEF, WORKERS_FILE, RunPlan, host_names
from cloudtrain.backends.local_runner import MODULE as RUNNER_MODULE
from cloudtrain.store import JobRecord
from tests.control_plane_images import ImageJobs

LOCAL = "local"  # the store's backend name for the jobs the runner supervises
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ACCOUNT = "123456789012"  # moto's
MWMS_HP = "sagemaker_multi_worker_mirrored_strategy_enabled"
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/(?P<service>[^/]+)/aws4_request")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade", "content-length"})
POLL_S = 0.2
SYNC_S = 1.0
SUMMARY_FIELDS = frozenset(
    {"TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime"}
    | {"TrainingJobStatus", "SecondaryStatus"}
)
SPOT_PRICE = 0.3  # billable share of spot time, a stand-in for the market price (gives 70% savings)


@dataclass(frozen=True)
class Request:
    """One request as the endpoint received it (SageMaker's and those forwarded to moto alike)."""

    service: str  # from the SigV4 credential scope: sagemaker, s3, logs, sts ...
    operation: str  # CreateTrainingJob, PutObject, UploadPart, GetLogEvents, GetCallerIdentity ...
    method: str
    path: str
    body: bytes = field(repr=False)

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")


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
    created_streams: set[str] = field(default_factory=set)
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)  # checkpoint file -> (size, mtime_ns)
    synced_index: bytes | None = None
    model_uploaded: bool = False

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
    `images = ImageJobs(...)` runs custom-image jobs in their image on a Docker engine (control_plane_images).
    """

    def __init__(self, moto_url: str, home: Path, *, region: str = "us-east-1") -> None:
        self.moto_url, self.region = moto_url.rstrip("/"), region
        self.home = Path(home)
        self.local = LocalBackend(self.home)  # its store and stop/refresh logic; jobs live in <home>/jobs/<job>
        self.run_jobs = True
        self.images: ImageJobs | None = None
        self._jobs: dict[str, _Job] = {}
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._service_model: Any = None
        self._ops = {
            "CreateTrainingJob": self._create,
            "DescribeTrainingJob": lambda p: self._describe(self._job(p["TrainingJobName"])),
            "ListTrainingJobs": self._list,
            "Search": self._search,
            "StopTrainingJob": self._stop,
            "ListTags": lambda p: {"Tags": self._by_arn(p["ResourceArn"]).tags},
        }
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
        with self._lock:
            self._requests.append(Request(service, operation, method, path, body))

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
        """botocore's validator on the service model, as AWS checks shapes before anything else."""
        from botocore.session import get_session
        from botocore.validate import ParamValidator

        if self._service_model is None:
            self._service_model = get_session().get_service_model("sagemaker")
        report = ParamValidator().validate(params, self._service_model.operation_model(action).input_shape)
        if report.has_errors():
            raise ApiError("ValidationException", report.generate_report())

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
        _check_create(p)
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
            spot = bool(job.request.get("EnableManagedSpotTraining"))
            out.update(
                TrainingEndTime=info.ended,
                TrainingTimeInSeconds=seconds,
                BillableTimeInSeconds=max(1, round(seconds * SPOT_PRICE)) if spot else seconds,
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
                    next_sync = time.monotonic() + SYNC_S
                if info.done:
                    self._upload_artifacts(job)
                    if job.runner is not None:
                        job.runner.wait()
                job.info = info
                if info.done:
                    return

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
        channels: dict[str, Path] = {}
        for channel in job.request.get("InputDataConfig", []):
            source = channel["DataSource"].get("S3DataSource", {})
            if source.get("S3DataType") != "S3Prefix":
                raise ValueError(f"channel {channel['ChannelName']}: only S3Prefix channels are supported here")
            channels[channel["ChannelName"]] = dest = job.folder / "channels" / channel["ChannelName"]
            _download_prefix(s3, source["S3Uri"], dest)
        job.layout = HostLayout(job.hosts, hyperparameters, channels, sourcedir)
        self._lay_out_hosts(job)
        environment = job.request.get("Environment", {})
        RunPlan(
            job_name=job.name,
            hosts=tuple(job.hosts),
            max_runtime=float(job.request["StoppingCondition"].get("MaxRuntimeInSeconds", 86400)),
            strategy="multi_worker_mirrored"
            if hyperparameters.get(MWMS_HP) == "true"
            else environment.get("CLOUDTRAIN_STRATEGY", "none"),
            communication=environment.get("CLOUDTRAIN_COMMUNICATION", "auto"),
            metrics=tuple(
                (m["Name"], m["Regex"]) for m in job.request["AlgorithmSpecification"].get("MetricDefinitions", [])
            ),
        ).save(job.folder)
        if self.images is not None:  # a custom image the test engine holds runs in containers of it
            self.images.prepare(job.folder, job.name, job.request, list(channels.values()))

    def _lay_out_hosts(self, job: _Job) -> None:
        """Fresh host folders, each with the checkpoints already in S3 (SageMaker restores them before training)."""
        assert job.layout is not None
        shutil.rmtree(job.folder / "hosts", ignore_errors=True)
        (job.folder / WORKERS_FILE).unlink(missing_ok=True)
        uri = job.request.get("CheckpointConfig", {}).get("S3Uri")
        for host in job.hosts:
            job.layout.create(job.folder / "hosts" / host, host)
            if uri:
                _download_prefix(self.moto("s3"), uri, job.folder / "hosts" / host / "checkpoints")
        job.synced, job.synced_index = {}, None

    def _start_runner(self, job: _Job) -> None:
        """The local runner with the request's Environment; a new set of log streams, as a container start makes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(job.request.get("Environment", {}))
        env["TMPDIR"] = str(job.folder / "tmp")  # the workers' scratch folders go away with the job folder
        (job.folder / "tmp").mkdir(exist_ok=True)
        module = (self.images.runner_module(job.folder) if self.images else None) or RUNNER_MODULE
        env.update(self.images.env if self.images else {})
        with open(job.folder / "runner.log", "ab") as log:
            job.runner = subprocess.Popen(
                [sys.executable, "-m", module, str(job.folder)],
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

    def _ship_logs(self, job: _Job) -> None:
        """New lines of each host's log to its CloudWatch stream (blank lines dropped: CloudWatch refuses them)."""
        logs = self.moto("logs") if job.streams else None
        for host in job.streams:
            tail = job.tails.setdefault(host, LogTail(host, job.folder / "logs" / f"{host}.jsonl"))
            events = [{"timestamp": int(e.timestamp * 1000), "message": e.message} for e in tail.read() if e.message]
            if not events or logs is None:
                continue
            stream = job.streams[host]
            if stream not in job.created_streams:
                with suppress(logs.exceptions.ResourceAlreadyExistsException):
                    logs.create_log_group(logGroupName=LOG_GROUP)
                logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
                job.created_streams.add(stream)
            for i in range(0, len(events), 1000):
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[i : i + 1000])

    def _sync_checkpoints(self, job: _Job) -> None:
        """New or changed files of the chief's checkpoint folder to CheckpointConfig.S3Uri.

        TensorFlow's `checkpoint` index is read first and uploaded last, so S3 never names a checkpoint
        whose files are not there yet; temporary (`*_temp*`) files are skipped.
        """
        uri = job.request.get("CheckpointConfig", {}).get("S3Uri")
        local = job.folder / "hosts" / CHIEF / "checkpoints"
        if not uri or not local.is_dir():
            return
        bucket, prefix = _split_s3(uri)
        key = (prefix.rstrip("/") + "/") if prefix.strip("/") else ""
        index = local / "checkpoint"
        index_bytes = index.read_bytes() if index.is_file() else None
        s3 = self.moto("s3")
        for path in sorted(local.rglob("*")):
            rel = path.relative_to(local).as_posix()
            if path == index or "_temp" in rel or not path.is_file():
                continue
            try:
                stat = path.stat()
                if job.synced.get(rel) == (stat.st_size, stat.st_mtime_ns):
                    continue
                data = path.read_bytes()
            except FileNotFoundError:  # an old checkpoint removed by max_to_keep meanwhile
                continue
            s3.put_object(Bucket=bucket, Key=key + rel, Body=data)
            job.synced[rel] = (stat.st_size, stat.st_mtime_ns)
        if index_bytes is not None and index_bytes != job.synced_index:
            s3.put_object(Bucket=bucket, Key=key + "checkpoint", Body=index_bytes)
            job.synced_index = index_bytes

    def _output_uri(self, job: _Job, name: str) -> str:
        return f"{job.request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job.name}/output/{name}"

    def _upload_artifacts(self, job: _Job) -> None:
        """The runner's model.tar.gz and output.tar.gz (made for Completed and Stopped jobs) to S3."""
        s3 = self.moto("s3")
        for name in ("model.tar.gz", "output.tar.gz"):
            if (job.folder / name).is_file():
                s3.upload_file(str(job.folder / name), *_split_s3(self._output_uri(job, name)))
                job.model_uploaded = True

    def _kill(self, job: _Job) -> None:
        """SIGKILL the runner's and every worker's process group, and wait for them to go."""
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


def _check_create(p: dict[str, Any]) -> None:
    """AWS's checks beyond the shapes botocore validates (patterns, maximum sizes, spot, S3 URIs)."""
    errors = []
    if not JOB_NAME.match(p["TrainingJobName"]):
        errors.append(f"Value '{p['TrainingJobName']}' at 'trainingJobName' must match {JOB_NAME.pattern}")
    if not ROLE_ARN.match(p["RoleArn"]):
        errors.append(f"Value '{p['RoleArn']}' at 'roleArn' is not an IAM role ARN")
    algorithm, resources, stopping = p["AlgorithmSpecification"], p["ResourceConfig"], p["StoppingCondition"]
    if not algorithm.get("TrainingImage") and not algorithm.get("AlgorithmName"):
        errors.append("AlgorithmSpecification needs a TrainingImage or an AlgorithmName")
    if not resources.get("InstanceType") and not resources.get("InstanceGroups"):
        errors.append("ResourceConfig needs an InstanceType")
    hps = p.get("HyperParameters", {})
    if len(hps) > 100 or any(len(k) > 256 or len(v) > 2500 for k, v in hps.items()):
        errors.append("HyperParameters: at most 100, names up to 256 characters, values up to 2500")
    uris = [p["OutputDataConfig"]["S3OutputPath"], p.get("CheckpointConfig", {}).get("S3Uri", "s3://x")]
    uris += [c["DataSource"].get("S3DataSource", {}).get("S3Uri", "s3://x") for c in p.get("InputDataConfig", [])]
    errors += [f"Value '{u}' is not an s3:// URI" for u in uris if not S3_URI.match(u)]
    names = [c["ChannelName"] for c in p.get("InputDataConfig", [])]
    if len(names) != len(set(names)):
        errors.append("InputDataConfig: channel names must be unique")
    if p.get("EnableManagedSpotTraining"):
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None or wait < stopping.get("MaxRuntimeInSeconds", 86400):
            errors.append("MaxWaitTimeInSeconds is required with managed spot training and must be >= MaxRuntime")
    if errors:
        raise ApiError("ValidationException", f"{len(errors)} validation error(s) detected: " + "; ".join(errors))


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
        else:
            status, headers, data = self.plane.forward(self.command, self.path, self.headers, body)
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
