"""The price table: USD per instance-hour for SageMaker hosting and EC2, by region and instance type.

The shipped table (prices.json, dated, its source named in its `about`) is used unless another
file is given; `refresh()` builds a new one from the AWS Price List API (needs AWS credentials).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Service = Literal["sagemaker", "ec2"]


class UnknownPrice(LookupError):
    pass


@dataclass(frozen=True)
class PriceTable:
    doc: dict[str, Any]
    path: str

    @property
    def as_of(self) -> str:
        return str(self.doc.get("as_of", "?"))

    @property
    def source(self) -> str:
        return str(self.doc.get("source", "?"))

    def hourly(self, service: Service, region: str, instance_type: str) -> float:
        regions = self.doc.get(service, {})
        if region not in regions:
            raise UnknownPrice(
                f"no {service} prices for region {region!r} in {self.path}; regions: "
                f"{', '.join(sorted(regions))}; refresh: modelfleet cost prices --refresh"
            )
        table = regions[region]
        if instance_type not in table:
            raise UnknownPrice(
                f"no {service} price for {instance_type} in {region} in {self.path}; "
                "refresh: modelfleet cost prices --refresh"
            )
        return float(table[instance_type])


def load_prices(path: str | Path | None = None) -> PriceTable:
    if path is None:
        text = resources.files("modelfleet.cost").joinpath("prices.json").read_text(encoding="utf-8")
        return PriceTable(json.loads(text), "the shipped price table")
    return PriceTable(json.loads(Path(path).read_text(encoding="utf-8")), str(path))


# The Price List API names regions by location, not by code.
_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
}


def refresh(base: PriceTable, client: Any, today: str) -> dict[str, Any]:
    """A new table with every (service, region, type) of `base` priced again through `pricing.get_products`.

    `client` is `boto3.client("pricing", region_name="us-east-1")`; entries the API does not answer keep
    their old price, and are listed under `not_refreshed`.
    """
    doc = json.loads(json.dumps(base.doc))
    missed: list[str] = []
    for service, code in (("sagemaker", "AmazonSageMaker"), ("ec2", "AmazonEC2")):
        for region, table in doc.get(service, {}).items():
            for itype in table:
                price = _api_price(client, code, service, _LOCATIONS.get(region, region), itype)
                if price is None:
                    missed.append(f"{service}/{region}/{itype}")
                else:
                    table[itype] = price
    doc.update(
        as_of=today,
        source="AWS Price List API (pricing.get_products), on-demand",
        not_refreshed=missed,
        about=f"Refreshed from the AWS Price List API on {today}; USD per instance-hour, on-demand.",
    )
    return doc


def _api_price(client: Any, code: str, service: str, location: str, itype: str) -> float | None:
    filters = [("location", location), ("instanceType", itype)]
    if service == "ec2":
        filters += [
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
        ]
    else:
        filters += [("component", "Hosting")]
    resp = client.get_products(
        ServiceCode=code, MaxResults=10, Filters=[{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in filters]
    )
    for item in resp.get("PriceList", []):
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0))
                if usd > 0:
                    return usd
    return None
