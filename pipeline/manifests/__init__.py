"""Kubernetes manifests: render (kustomize), validate (schemas), check (policy)."""
