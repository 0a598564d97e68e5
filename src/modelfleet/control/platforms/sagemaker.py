"""sagemaker deployments: a real-time endpoint, created and deleted through the AWS API.

    start:  create the model and the endpoint config if they are missing, then the endpoint
    update: the model and config names carry a digest of their settings, so changed `create:` settings
            make a new config, and UpdateEndpoint moves the running endpoint to it (it serves meanwhile)
    stop:   delete the endpoint; keep the model and the config, so the next start is one call
    watch:  DescribeEndpoint every few seconds -> the replica's state (Creating -> starting, InService -> ready)

An endpoint without `create:` settings is managed elsewhere: modelfleet watches it but will not
create it (stop still deletes it, and a later start needs `create:`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelfleet.backends.sagemaker import aws_client
from modelfleet.background import Periodic
from modelfleet.config import sagemaker_names
from modelfleet.config.schema import SageMakerDeployment
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

POLL = 5.0
_STATES = {
    "InService": ReplicaState.READY,
    "Creating": ReplicaState.STARTING,
    "Updating": ReplicaState.READY,  # an endpoint serves while it moves to a new config
    "SystemUpdating": ReplicaState.READY,
    "RollingBack": ReplicaState.READY,
    "Deleting": ReplicaState.STOPPED,
    "Failed": ReplicaState.UNHEALTHY,
    "OutOfService": ReplicaState.UNHEALTHY,
}


class SageMakerEndpoint:
    managed = True

    def __init__(
        self, replica: Replica, dep: SageMakerDeployment, registry: ReplicaRegistry, poll: float = POLL
    ) -> None:
        self.replica = replica
        self.dep = dep
        self.registry = registry
        self._client: Any = None
        # observe() reports its own failures as the replica's state, so the loop itself stays quiet.
        self._watch = Periodic(f"SageMaker endpoint {dep.endpoint} watch", poll, self.observe)
        named = sagemaker_names.names(dep)
        self.model_name = named.model
        self.config_name = named.config

    def _invoke(self, method: str, kwargs: dict[str, Any]) -> Any:
        if self._client is None:  # built here, on a worker thread: making a boto3 client takes ~100 ms
            self._client = aws_client("sagemaker", self.dep.region, self.dep.endpoint_url)
        return getattr(self._client, method)(**kwargs)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._invoke, method, kwargs)

    def _mark(self, state: ReplicaState, reason: str) -> None:
        self.registry.mark(self.replica, state, reason)

    async def status(self) -> str | None:
        """The endpoint's status, or None when there is no endpoint."""
        from botocore.exceptions import ClientError

        try:
            return (await self._call("describe_endpoint", EndpointName=self.dep.endpoint))["EndpointStatus"]
        except ClientError as exc:
            if "Could not find" in str(exc) or exc.response.get("Error", {}).get("Code") == "ValidationException":
                return None
            raise

    async def probe(self, replica: Replica, timeout: float, path: str = "") -> str | None:
        """A health check for an ejected endpoint: None when it is InService, else why not."""
        try:
            status = await asyncio.wait_for(self.status(), timeout)
        except Exception as exc:
            return f"cannot describe endpoint {self.dep.endpoint}: {exc}"
        return None if status == "InService" else f"endpoint {self.dep.endpoint} is {status or 'missing'}"

    async def aclose(self) -> None:
        return None

    async def observe(self) -> None:
        try:
            status = await self.status()
        except Exception as exc:
            self._mark(ReplicaState.UNHEALTHY, f"cannot describe endpoint {self.dep.endpoint}: {exc}")
            return
        if status is None:
            self._mark(ReplicaState.STOPPED, f"endpoint {self.dep.endpoint} does not exist")
        else:
            self._mark(_STATES.get(status, ReplicaState.UNHEALTHY), f"endpoint {self.dep.endpoint} is {status}")

    async def watch(self) -> None:
        await self.observe()
        self._watch.start()

    def _ensure_watch(self) -> None:
        self._watch.start()

    async def start(self) -> None:
        self._ensure_watch()
        status = await self.status()
        if status not in (None, "Deleting", "Failed"):
            await self._update_if_changed(status)
            await self.observe()
            return  # already there, or on its way
        create = self.dep.create
        if create is None:
            self._mark(ReplicaState.UNHEALTHY, f"endpoint {self.dep.endpoint} does not exist and has no `create:` "
                                               "settings; create it elsewhere, or add them")  # fmt: skip
            return
        await self._ensure_model_and_config()
        if status == "Failed":
            await self._call("delete_endpoint", EndpointName=self.dep.endpoint)
        log.info("creating SageMaker endpoint %s (%s x%d)", self.dep.endpoint, create.instance_type,
                 create.instance_count)  # fmt: skip
        await self._call("create_endpoint", EndpointName=self.dep.endpoint, EndpointConfigName=self.config_name,
                         Tags=_tags(create.tags))  # fmt: skip
        self._mark(ReplicaState.STARTING, f"endpoint {self.dep.endpoint} is being created")
        await self.observe()

    async def _update_if_changed(self, status: str) -> None:
        if self.dep.create is None or status != "InService":
            return  # settings managed elsewhere, or an update already under way
        current = (await self._call("describe_endpoint", EndpointName=self.dep.endpoint))["EndpointConfigName"]
        if current == self.config_name:
            return
        await self._ensure_model_and_config()
        log.info("updating SageMaker endpoint %s: config %s -> %s", self.dep.endpoint, current, self.config_name)
        await self._call("update_endpoint", EndpointName=self.dep.endpoint, EndpointConfigName=self.config_name)

    async def _ensure_model_and_config(self) -> None:
        from botocore.exceptions import ClientError

        create = self.dep.create
        assert create is not None
        env = dict(create.env)
        if create.model_id:
            env.setdefault("HF_MODEL_ID", create.model_id)
        if create.hf_token:
            env["HF_TOKEN"] = create.hf_token.get_secret_value()  # resolved from env or Secrets Manager; never logged
        try:
            await self._call("describe_model", ModelName=self.model_name)
        except ClientError:
            await self._call("create_model", ModelName=self.model_name, ExecutionRoleArn=create.role_arn,
                             PrimaryContainer={"Image": create.image, "Environment": env},
                             Tags=_tags(create.tags))  # fmt: skip
        try:
            await self._call("describe_endpoint_config", EndpointConfigName=self.config_name)
        except ClientError:
            await self._call("create_endpoint_config", EndpointConfigName=self.config_name, ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": self.model_name, "InstanceType": create.instance_type,
                "InitialInstanceCount": create.instance_count,
            }], Tags=_tags(create.tags))  # fmt: skip

    async def stop(self) -> None:
        self._ensure_watch()
        if await self.status() not in (None, "Deleting"):
            log.info("deleting SageMaker endpoint %s (its model and config are kept)", self.dep.endpoint)
            await self._call("delete_endpoint", EndpointName=self.dep.endpoint)
        await self.observe()

    async def shutdown(self) -> None:
        """The endpoint outlives the gateway: only stop watching it."""
        await self._watch.stop()


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in {"managed-by": "modelfleet", **tags}.items()]
