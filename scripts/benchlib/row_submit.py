"""Row `submit`: the first and a second submit of 50 MB of code, against the sagemaker SDK's TensorFlow estimator.

The code folder is half Python-like text (compresses about 3x) and half incompressible binary files (vendored
assets), made from a fixed seed so it is identical for every run. Both tools go through the counting proxy in
front of moto, which adds up the body bytes of every PutObject and UploadPart: that is what "uploaded" means.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path

from benchlib.aws import CountingProxy
from benchlib.context import Context, write_spec
from benchlib.core import CLOUDTRAIN, SDK_PY, Row, Stats, interleave, ratio_text
from benchlib.profiling import top_functions
from tests.loopback_aws import DEFAULT_BUCKET, ROLE_ARN

MIB = 1 << 20
UPLOADS = ("PutObject", "UploadPart")
# What the generated "source code" is made of (a split string: the word list reads better on two lines).
_VOCABULARY = (
    "def return self import from for in if else elif while with as tensor layer batch shape value np tf x y "
    "= == ( ) [ ] : , . + - * / 0 1 2 None True False"
)
SDK_CONFIG = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def make_code(folder: Path, total: int, seed: int = 0) -> None:
    """`total` bytes of code: half in 100 text modules, half in 25 random binary files, and train.py."""
    rng = random.Random(seed)
    vocabulary = _VOCABULARY.split()
    (folder / "pkg").mkdir(parents=True)
    (folder / "assets").mkdir()
    text_total, binary_total = total // 2, total - total // 2
    for i in range(100):
        size = text_total // 100 + (text_total % 100 if i == 0 else 0)
        words = rng.choices(vocabulary, k=size // 2)  # words average more than 2 bytes with their separator
        text = "\n".join(" ".join(words[j : j + 12]) for j in range(0, len(words), 12))
        (folder / "pkg" / f"mod{i:03d}.py").write_text(text[: size - 1] + "\n")
    for i in range(25):
        size = binary_total // 25 + (binary_total % 25 if i == 0 else 0)
        (folder / "assets" / f"blob{i:02d}.bin").write_bytes(rng.randbytes(size))
    (folder / "train.py").write_text("print('bench')\n")  # the entry point: a few more bytes


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(ctx: Context) -> Row:
    if not SDK_PY.exists():
        raise RuntimeError(f"{SDK_PY} is missing: the SDK comparison needs .venv-sdk (sagemaker>=2.250,<3)")
    moto = ctx.moto()
    work = ctx.folder("submit")
    source = work / "code"
    make_code(source, (5 if ctx.quick else 50) * MIB)
    code_mib = _size(source) / MIB
    spec = write_spec(work / "spec.json", name="bench-submit", source_dir=source, backend="sagemaker")
    (work / "sagemaker-config.yaml").write_text(SDK_CONFIG)
    proxy = CountingProxy(moto.url)
    ctx.stack.callback(proxy.close)
    home = ctx.folder("submit-home")
    env = ctx.aws_env(proxy.url, home)
    sdk_env = {
        **env,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(work / "sagemaker-config.yaml"),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }
    ct = [str(CLOUDTRAIN), "submit", str(spec), "--json"]
    sdk = [str(SDK_PY), str(Path(__file__).with_name("sdk_submit.py")), str(source), "--role", ROLE_ARN]
    sdk += ["--bucket", DEFAULT_BUCKET]
    sdk_times: list[dict[str, float]] = []

    def measure(cmd: list[str], run_env: dict[str, str], what: str) -> tuple[float, int, Counter[str]]:
        mark = proxy.mark()
        run = ctx.processes.run(cmd, env=run_env).check(what)
        if cmd is sdk:
            sdk_times.append(json.loads(run.out.strip().splitlines()[-1]))
        seen = proxy.since(mark)
        return run.wall, sum(s.body_bytes for s in seen if s.operation in UPLOADS), Counter(s.operation for s in seen)

    firsts = ctx.runs(5, 2)
    ctx.log(f"submit: {firsts} interleaved first submits each ({code_mib:.0f} MiB of new code every round)")
    fresh = iter(range(1, 1 + 1 + firsts))

    def first_of(tool: str, seed: int) -> tuple[float, int, Counter[str]]:
        """A first submit: code never uploaded (a new seed each round, the same folder for both tools)."""
        folder = work / f"code-first-{seed}"
        spec_i = write_spec(
            work / f"spec-first-{seed}.json", name="bench-submit", source_dir=folder, backend="sagemaker"
        )
        if tool == "cloudtrain":
            return measure([str(CLOUDTRAIN), "submit", str(spec_i), "--json"], env, "first cloudtrain submit")
        return measure([*sdk[:2], str(folder), *sdk[3:]], sdk_env, "first SDK fit")

    first_results: dict[str, list[tuple[float, int, Counter[str]]]] = {"cloudtrain": [], "sdk": []}
    for round_ in range(1 + firsts):  # round 0 is the warm-up: it creates the bucket, discarded
        seed = next(fresh)
        make_code(work / f"code-first-{seed}", (5 if ctx.quick else 50) * MIB, seed=seed)
        for tool in ("cloudtrain", "sdk") if round_ % 2 == 0 else ("sdk", "cloudtrain"):
            outcome = first_of(tool, seed)
            if round_ > 0:
                first_results[tool].append(outcome)
    first_walls = [w for w, _, _ in first_results["cloudtrain"]]
    sdk_first_walls = [w for w, _, _ in first_results["sdk"]]
    first_bytes = statistics.median(b for _, b, _ in first_results["cloudtrain"])
    sdk_first_bytes = statistics.median(b for _, b, _ in first_results["sdk"])
    _, first_text = ratio_text(first_walls, sdk_first_walls)
    measure(ct, env, "cloudtrain submit of the row's code (its first: uploads it)")
    runs = ctx.runs(7, 2)
    ctx.log(f"submit: {runs} interleaved runs of `cloudtrain submit` and the SDK's fit(wait=False)")
    results = interleave(
        [
            ("cloudtrain", lambda: measure(ct, env, "cloudtrain submit")),
            ("sdk", lambda: measure(sdk, sdk_env, "SDK fit")),
        ],
        runs,
        warmup=0,
    )
    ct_walls = [w for w, _, _ in results["cloudtrain"]]
    sdk_walls = [w for w, _, _ in results["sdk"]]
    ct_bytes = [b for _, b, _ in results["cloudtrain"]]
    sdk_bytes = [b for _, b, _ in results["sdk"]]
    ratio, text = ratio_text(ct_walls, sdk_walls)
    requests = results["cloudtrain"][-1][2]
    sdk_requests = results["sdk"][-1][2]
    profile = top_functions(ctx.processes, ct[1:], env, work)
    sdk_import = statistics.median(t["import_s"] for t in sdk_times[1:])
    sdk_fit = statistics.median(t["fit_s"] for t in sdk_times[1:])
    return Row(
        name="submit",
        title=f"submit with {code_mib:.0f} MiB of code: first time, and again unchanged",
        figure=f"first {Stats.of(first_walls).fmt()}, uploaded {first_bytes / MIB:.1f} MiB; again "
        f"{Stats.of(ct_walls).fmt()}, uploaded {max(ct_bytes)} bytes (every run)",
        against=f"SDK TensorFlow `fit(wait=False)`: first {Stats.of(sdk_first_walls).fmt()}, uploaded "
        f"{sdk_first_bytes / MIB:.1f} MiB; again {Stats.of(sdk_walls).fmt()}, uploaded "
        f"{statistics.median(sdk_bytes) / MIB:.1f} MiB per run",
        ratio=f"again {text}; first {first_text}",
        target="again: ≤ 0.5x, 0 bytes uploaded",
        met=ratio <= 0.5 and max(ct_bytes) == 0,
        commands=[
            f"AWS_ENDPOINT_URL=<proxy in front of moto> {' '.join(ct)}",
            f"AWS_ENDPOINT_URL=<same> SAGEMAKER_USER_CONFIG_OVERRIDE=<TelemetryOptOut: true> {' '.join(sdk)}",
        ],
        details=[
            f"Code: {code_mib:.0f} MiB, half Python-like text, half random binary files (fixed seed, so unchanged).",
            "The target is of the unchanged-code submits (again). First submits: "
            f"{firsts} rounds, interleaved (the order alternating each round), each round with {code_mib:.0f} MiB of "
            "code never uploaded before (a new seed), after a discarded warm-up round that creates the bucket.",
            f"cloudtrain's requests per submit: {_fmt(requests)}.",
            f"The SDK's requests per fit: {_fmt(sdk_requests)}.",
            f"SDK time: import {sdk_import:.2f} s, then Session + estimator + fit {sdk_fit:.2f} s (medians).",
            "cloudtrain, one profiled run: " + "; ".join(profile),
        ],
        data={
            "cloudtrain_s": ct_walls,
            "sdk_s": sdk_walls,
            "cloudtrain_bytes": ct_bytes,
            "sdk_bytes": sdk_bytes,
            "first": {"cloudtrain_s": first_walls, "cloudtrain_bytes": first_bytes},
            "sdk_first": {"sdk_s": sdk_first_walls, "sdk_bytes": sdk_first_bytes},
        },
    )


def _fmt(calls: Counter[str]) -> str:
    return ", ".join(f"{op}x{n}" if n > 1 else op for op, n in sorted(calls.items()))
