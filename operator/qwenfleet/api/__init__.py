"""The public contract: pydantic models of Qwen3Deployment and Qwen3Router, the Plan, and CRD generation."""

from qwenfleet.api.deployment import (
    AutoscalingMode,
    Qwen3Deployment,
    Qwen3DeploymentSpec,
    Qwen3DeploymentStatus,
)
from qwenfleet.api.plan import Plan
from qwenfleet.api.router import Qwen3Router, Qwen3RouterSpec, Qwen3RouterStatus

__all__ = [
    "AutoscalingMode",
    "Plan",
    "Qwen3Deployment",
    "Qwen3DeploymentSpec",
    "Qwen3DeploymentStatus",
    "Qwen3Router",
    "Qwen3RouterSpec",
    "Qwen3RouterStatus",
]
