"""What a fleet costs: a dated price table, the hours its schedules imply, and chargeback by tokens."""

from modelfleet.cost.chargeback import chargeback
from modelfleet.cost.hours import Hours, hours_between, running_intervals
from modelfleet.cost.model import DeploymentCost, FleetCost, estimate, month_period
from modelfleet.cost.prices import PriceTable, UnknownPrice, load_prices

__all__ = [
    "DeploymentCost",
    "FleetCost",
    "Hours",
    "PriceTable",
    "UnknownPrice",
    "chargeback",
    "estimate",
    "hours_between",
    "load_prices",
    "month_period",
    "running_intervals",
]
