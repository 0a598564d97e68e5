"""Regions and instance types AWS has, from botocore's bundled service models (offline), when botocore
is installed: one it does not list is most likely a typo, which terraform would only meet at plan or
apply. A warning, not an error: a botocore older than a new region or instance type would refuse it."""

from __future__ import annotations

import difflib

from modelfleet.deploy.aws.module import Module


def unknown(m: Module) -> list[str]:
    try:
        import botocore
        import botocore.session
    except ImportError:
        return []
    session = botocore.session.get_session()
    regions = sorted({r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)})
    ec2 = session.get_service_model("ec2").shape_for("InstanceType").enum
    sagemaker = session.get_service_model("sagemaker").shape_for("ProductionVariantInstanceType").enum
    found = []

    def check(where: str, value: str, known: list[str]) -> None:
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            found.append(f"{where}: {value!r} is not one botocore {botocore.__version__} knows{hint}")

    check("deploy.region", m.deploy.region, regions)
    if m.deploy.gateway == "ec2":
        check("deploy.ec2.instance_type", m.deploy.ec2.instance_type, ec2)
    for name, dep in m.sagemaker().items():
        assert dep.create is not None
        check(f"deployments.{name}.create.instance_type", dep.create.instance_type, sagemaker)
    return found
