"""Promotion of a gated digest: GitOps commit or in-cluster Argo Rollouts canary, locked and audited."""
