"""PromQL a profile implies: the autoscaling signal and the canary analysis, with the label matchers
of where they run (an Argo Rollouts canary ReplicaSet, a KServe revision, a namespace)."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from pipeline.serving.profiles import ServingProfile

RATE_WINDOW = "2m"
# Argo Rollouts' analysis args for the canary ReplicaSet (podTemplateHashValue: Latest).
ROLLOUT_SELECTOR = 'namespace="{{args.namespace}}", rollouts_pod_template_hash="{{args.canary-hash}}"'
NAMESPACE_PLACEHOLDER = "NAMESPACE"


class AnalysisQuery(BaseModel):
    """One canary metric: `query` must stay at or below the `max_arg` argument (NaN, i.e. no data, fails)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    query: str
    max_arg: str
    default_max: str


def with_matchers(selector: str, matchers: str) -> str:
    """`metric{a="b"}` + `c="d"` -> `metric{a="b", c="d"}`; a bare name gets the braces."""
    if not matchers:
        return selector
    m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?$", selector.strip())
    if not m:
        raise ValueError(f"not a metric selector: {selector!r}")
    inner = ", ".join(x for x in (m.group(2) or "", matchers) if x)
    return f"{m.group(1)}{{{inner}}}"


def _any(names: tuple[str, ...], build: Callable[[str], str]) -> str:
    """`build(name)` for each name joined with `or`: a server that renamed a metric matches either spelling."""
    return " or ".join(build(n) for n in names)


def _p99(names: tuple[str, ...], matchers: str) -> str:
    return _any(names, lambda n: f"histogram_quantile(0.99, sum by (le) "
                f"(rate({with_matchers(n + '_bucket', matchers)}[{RATE_WINDOW}])))")


def queue_query(profile: ServingProfile, namespace: str = NAMESPACE_PLACEHOLDER) -> str:
    """Requests waiting in the server's queue, summed over the namespace: the autoscaling signal."""
    names = profile.metrics.waiting
    if not names:
        raise ValueError(f"profile {profile.name} names no queue-depth gauge")
    return _any(names, lambda n: f'sum({n}{{namespace="{namespace}"}})')


def latency_query(profile: ServingProfile, matchers: str) -> AnalysisQuery:
    """The canary's latency SLO: TTFT p99 where the server has the histogram, else time per token."""
    m = profile.metrics
    if m.ttft:
        return AnalysisQuery(name="ttft-p99", query=_p99(m.ttft, matchers), max_arg="ttft-p99-max-s", default_max="0.5")
    if m.itl:
        return AnalysisQuery(name="tpot-p99", query=_p99(m.itl, matchers), max_arg="tpot-p99-max-s", default_max="0.1")
    if m.itl_counters:
        secs, toks = m.itl_counters
        q = (f"sum(rate({with_matchers(secs, matchers)}[{RATE_WINDOW}])) / "
             f"sum(rate({with_matchers(toks, matchers)}[{RATE_WINDOW}]))")
        return AnalysisQuery(name="tpot-mean", query=q, max_arg="tpot-mean-max-s", default_max="0.1")
    raise ValueError(f"profile {profile.name} names no latency metric")


def error_query(profile: ServingProfile, matchers: str) -> AnalysisQuery | None:
    if profile.metrics.errors is None:
        return None
    failed, total = profile.metrics.errors
    q = (f"sum(rate({with_matchers(failed, matchers)}[{RATE_WINDOW}])) / "
         f"sum(rate({with_matchers(total, matchers)}[{RATE_WINDOW}]))")
    return AnalysisQuery(name="error-rate", query=q, max_arg="error-rate-max", default_max="0.01")


def analysis_queries(profile: ServingProfile, matchers: str = ROLLOUT_SELECTOR) -> list[AnalysisQuery]:
    out = [latency_query(profile, matchers)]
    err = error_query(profile, matchers)
    if err is not None:
        out.append(err)
    return out
