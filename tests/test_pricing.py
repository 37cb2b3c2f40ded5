"""cloudtrain.pricing: a job's cost estimate from the price table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtrain.pricing import SPOT_NOTE, estimate, price_per_hour
from cloudtrain.spec.models import ResourcesSpec


def test_cost_estimate() -> None:
    """count x max_runtime hours x the listed price, for any listed type; unlisted types say so."""
    for instance_type in ("ml.g5.xlarge", "ml.m5.4xlarge"):
        price = price_per_hour(instance_type)
        assert price is not None
        est = estimate(ResourcesSpec(instance_type=instance_type, instance_count=3, max_runtime=5400))
        assert est.total_usd == round(3 * 1.5 * price, 2)
        assert f"${price:g}/h" in est.summary() and "approximate, us-east-1" in est.summary()
        assert SPOT_NOTE not in est.summary()
    spot = estimate(
        ResourcesSpec.model_validate({"instance_type": "ml.p4d.24xlarge", "spot": {"enabled": True, "max_wait": 90000}})
    )
    assert spot.total_usd == round(24 * price_per_hour("ml.p4d.24xlarge"), 2) and SPOT_NOTE in spot.summary()
    unknown = estimate(ResourcesSpec(instance_type="ml.x9.huge"))
    assert unknown.total_usd is None and "no price" in unknown.summary()


def test_price_table_names_real_instance_types_at_plausible_prices() -> None:
    """Checks of prices.json against what does not come from it: botocore's list of SageMaker training instance
    types (a misspelt type would never be priced), and AWS's linear pricing of the m5 and c5 sizes (a mistyped
    digit breaks it)."""
    from botocore.session import get_session

    table = json.loads((Path(__file__).parent.parent / "cloudtrain/data/prices.json").read_text())["prices"]
    known = set(get_session().get_service_model("sagemaker").shape_for("TrainingInstanceType").enum)
    assert sorted(set(table) - known) == []
    assert all(isinstance(p, (int, float)) and p > 0 for p in table.values())
    for family in ("m5", "c5"):
        base = table[f"ml.{family}.xlarge"]
        for size, price in ((k.split(".")[2], v) for k, v in table.items() if k.split(".")[1] == family):
            times = 0.5 if size == "large" else float(size.removesuffix("xlarge") or 1)
            assert price == pytest.approx(times * base, rel=0.02), (family, size, price, base)
