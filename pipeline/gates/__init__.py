"""Gate engine: policy (`gates.yaml`), statistics, baseline choice, evaluation and outputs."""

from pipeline.gates.policy import GateSpec, Policy, load_policy, policy_from_dict

__all__ = ["GateSpec", "Policy", "load_policy", "policy_from_dict"]
