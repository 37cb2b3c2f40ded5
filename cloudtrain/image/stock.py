"""Which container image a SageMaker job runs.

`image.uri` is used as given. `image.framework_version` maps to AWS's stock TensorFlow training
image for the region and the instance type (GPU image for g*/p* families, CPU otherwise) through the
sagemaker SDK's own image URI tables, the authority on which versions exist where. The SDK is an
optional extra (`cloudtrain[images]`, i.e. `sagemaker-core>=2`, whose `sagemaker.core.image_uris`
works offline; the full `sagemaker` SDK, v2 or v3, works too), imported only here and only when
needed. Without it, a built-in table (`data/tf_training_images.json`, taken from the same SDK
tables: TF 2.x, commercial, China and GovCloud regions) is used instead and the choice says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from cloudtrain.errors import UserError, one_line, quoted
from cloudtrain.spec.models import ImageSpec

FRAMEWORK = "tensorflow"
BUILTIN_SOURCE = "cloudtrain's built-in table (install cloudtrain[images] for the sagemaker SDK's)"
_FAMILY = re.compile(r"^ml\.(?P<family>[a-z0-9-]+)\.[a-z0-9]+$")

Retrieve = Callable[..., str]


@dataclass(frozen=True)
class ImageChoice:
    """An image URI and where it came from (shown by `--dry-run`)."""

    uri: str
    source: str


def instance_family(instance_type: str) -> str:
    m = _FAMILY.match(instance_type)
    if not m:
        raise UserError(f"resources.instance_type {quoted(instance_type)} is not of the form ml.<family>.<size>")
    return m.group("family")


def processor(instance_type: str) -> str:
    """'gpu' for g*/p* families, 'cpu' otherwise, as the SDK decides; Inferentia/Trainium have no TF image."""
    family = instance_family(instance_type)
    if family.startswith(("inf", "trn")):
        raise UserError(f"{instance_type}: AWS has no stock TensorFlow training image for Inferentia/Trainium")
    return "gpu" if family[0] in ("g", "p") else "cpu"


def _sdk() -> tuple[Retrieve, str] | None:
    """The installed SDK's `image_uris.retrieve` and its package name and version, if any works."""
    from importlib.metadata import PackageNotFoundError, version

    for module, dists in (
        ("sagemaker.core.image_uris", ("sagemaker-core", "sagemaker")),
        ("sagemaker.image_uris", ("sagemaker",)),
    ):
        try:
            import importlib

            mod = importlib.import_module(module)
        except Exception:  # absent, or broken by incompatible dependencies: both mean "use the table"
            continue
        for dist in dists:
            try:
                return mod.retrieve, f"{dist} {version(dist)}"
            except PackageNotFoundError:
                continue
        return mod.retrieve, module
    return None


@cache
def _table() -> dict[str, Any]:
    data = resources.files("cloudtrain").joinpath("data/tf_training_images.json").read_text()
    return json.loads(data)  # type: ignore[no-any-return]


def builtin_uri(version: str, region: str, instance_type: str, py_version: str | None = None) -> str:
    """The stock TF training image from the built-in table; errors list what the table knows."""
    table = _table()
    aliases: dict[str, str] = table["version_aliases"]
    py_versions: dict[str, list[str]] = table["py_versions"]
    full = aliases.get(version, version)
    if full not in py_versions:
        known = ", ".join(aliases)
        raise UserError(f"image.framework_version {version}: no AWS TensorFlow training image (known: {known})")
    available = py_versions[full]
    if py_version is None:
        if len(available) != 1:
            raise UserError(f"image.py_version: TensorFlow {version} needs one of {', '.join(available)}")
        py_version = available[0]
    elif py_version not in available:
        raise UserError(f"image.py_version {py_version}: TensorFlow {version} images have {', '.join(available)}")
    registry = table["registries"].get(region)
    if registry is None:
        raise UserError(f"no AWS TensorFlow training image known in region {region} ({BUILTIN_SOURCE})")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = f"{version}-{processor(instance_type)}-{py_version}"
    if instance_family(instance_type) == "p4d" and tag in table["p4d_tag_suffixes"]:  # CUDA 11 builds for A100s
        tag += "-" + table["p4d_tag_suffixes"][tag]
    return f"{registry}.dkr.ecr.{region}.{domain}/{table['repository']}:{tag}"


def resolve_image(
    image: ImageSpec,
    region: str,
    instance_type: str,
    *,
    built_uri: str | None = None,
    use_sdk: bool = True,
) -> ImageChoice:
    """The image of a job: image.uri, a built image's URI, or AWS's stock TF training image."""
    if image.kind == "uri":
        return ImageChoice(str(image.uri), "image.uri")
    if image.kind == "build":
        if built_uri is None:  # a programming error: the backend resolves image.build before asking
            raise ValueError("image.build: pass the URI that cloudtrain.image.build made (built_uri)")
        return ImageChoice(built_uri, "cloudtrain build")
    version = image.version
    processor(instance_type)  # validates the instance type before any SDK is imported
    sdk = _sdk() if use_sdk else None
    if sdk is None:
        return ImageChoice(builtin_uri(version, region, instance_type, image.py_version), BUILTIN_SOURCE)
    retrieve, source = sdk
    try:
        uri = retrieve(
            FRAMEWORK,
            region=region,
            version=version,
            py_version=image.py_version,
            instance_type=instance_type,
            image_scope="training",
        )
    except (ValueError, KeyError) as e:
        raise UserError(one_line(f"image.framework_version {version} in {region}: {e}", limit=400)) from None
    return ImageChoice(str(uri), source)


def training_image_uri(image: ImageSpec, region: str, instance_type: str) -> str:
    return resolve_image(image, region, instance_type).uri
