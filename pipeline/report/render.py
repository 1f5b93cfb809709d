"""The Jinja2 environment for report pages: package templates, autoescaping, CSS inlined.

Pages are self-contained (no link to any file outside the site, nothing from the internet), so a
report opens from a CI artifact, a file:// URL or `llmgate serve-dashboard` alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    return env


@cache
def inline_css() -> Markup:
    return Markup(resources.files("pipeline").joinpath("static/report.css").read_text())


def render(template: str, *, root: str | None = None, **ctx: Any) -> str:
    """Render one page. `root` is the relative path to the site root, or None for a standalone page."""
    return environment().get_template(template).render(
        css=inline_css(), root=root, generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}", **ctx
    )
