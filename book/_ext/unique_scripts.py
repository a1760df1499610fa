"""A Sphinx extension of the course book: each page declares each script once.

sphinx-thebe (loaded by Jupyter Book 1) adds its inline settings script every time Sphinx reads
the sources, so a page built with ``--all`` declared ``const THEBE_JS_URL`` twice and every
browser console showed a SyntaxError. Identical script entries are dropped here, per page.
"""

from __future__ import annotations

from typing import Any


def drop_repeated_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, tuple]] = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        # The same inline script arrives once with filename None and once with "": same script.
        filename = getattr(script, "filename", None) or ""
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Any) -> dict:
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
