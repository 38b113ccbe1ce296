"""Plan renderers (SPEC §5): rich text, versioned JSON, Markdown, and the email masking they share.

Formatting only: renderers take a finished Plan and never decide what changes; the CLI chooses
the renderer and passes the console, the path and whether to mask.
"""

from reconciler.render.json_plan import dumps_document, plan_to_document, read_plan_json, write_plan_json
from reconciler.render.markdown import render_markdown
from reconciler.render.mask import mask_email, should_redact
from reconciler.render.text import NO_CHANGES, render_plan, render_safety_violations, render_stale_diff

__all__ = [
    "NO_CHANGES",
    "dumps_document",
    "mask_email",
    "plan_to_document",
    "read_plan_json",
    "render_markdown",
    "render_plan",
    "render_safety_violations",
    "render_stale_diff",
    "should_redact",
    "write_plan_json",
]
