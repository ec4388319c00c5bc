"""The OpenAPI document as one readable HTML page. Pure: a dict in, a string out.

Self-contained on purpose: no script, no web font, no CDN, so `/docs` works offline and
under a `default-src 'none'` content security policy. Every text from the document is
escaped; schema references become in-page links.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:980px;margin:0 auto;padding:1.5rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
section.op{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;font:bold 13px monospace;color:#fff;border-radius:4px;
text-align:center;padding:.1rem .3rem;margin-right:.5rem}
.get{background:#2f7d32}.post{background:#1565c0}.put{background:#6a1b9a}
.patch{background:#ef6c00}.delete{background:#c62828}
code,pre{font:13px/1.4 ui-monospace,monospace;background:#f0f0f0;border-radius:3px}
code{padding:0 .2rem}pre{padding:.6rem;overflow-x:auto}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}.desc{white-space:pre-wrap}nav a{margin-right:.8rem}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")


def _prose(text: object) -> str:
    """Escaped text with the document's Markdown code spans and bold kept readable."""
    escaped = _e(text).strip()
    return _STRONG.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", escaped))


def _ref_link(ref: str) -> str:
    name = ref.rsplit("/", 1)[-1]
    return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'


def _schema_ref(schema: Mapping[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return _ref_link(str(schema["$ref"]))
    return f"<pre>{_e(json.dumps(schema, indent=2))}</pre>"


def _resolve(doc: Mapping[str, Any], item: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow one `#/components/...` reference (parameters and responses)."""
    ref = item.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return item
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return dict(node)


def _operation(
    doc: Mapping[str, Any], path: str, method: str, op: Mapping[str, Any], shared: list[Any]
) -> str:
    out = [f'<section class="op" id="{_e(op.get("operationId", method + path))}">']
    out.append(f'<h3><span class="m {method}">{method.upper()}</span><code>{_e(path)}</code></h3>')
    if op.get("summary"):
        out.append(f"<p><strong>{_e(op['summary'])}</strong></p>")
    if op.get("description"):
        out.append(f'<p class="desc">{_prose(op["description"])}</p>')
    security = op.get("security", doc.get("security", []))
    names = [" + ".join(req) for req in security if req] if security else []
    out.append(f"<p>Credentials: {_e(', '.join(names)) if names else 'none'}</p>")
    params = [_resolve(doc, p) for p in [*shared, *op.get("parameters", [])]]
    if params:
        out.append("<table><tr><th>Parameter</th><th>In</th><th>Schema</th><th>About</th></tr>")
        for p in params:
            out.append(
                f"<tr><td><code>{_e(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
                f"<td>{_e(p['in'])}</td><td><code>{_e(json.dumps(p.get('schema', {})))}</code></td>"
                f"<td>{_prose(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            out.append(
                f"<p>Body (<code>{_e(media)}</code>): {_schema_ref(content.get('schema'))}</p>"
            )
            if "example" in content:
                out.append(f"<pre>{_e(json.dumps(content['example'], indent=2))}</pre>")
    out.append("<table><tr><th>Status</th><th>Meaning</th><th>Body</th></tr>")
    for status, raw in op.get("responses", {}).items():
        response = _resolve(doc, raw)
        bodies = [
            f"<code>{_e(media)}</code> {_schema_ref(content.get('schema'))}"
            for media, content in response.get("content", {}).items()
        ]
        out.append(
            f'<tr><td>{_e(status)}</td><td class="desc">{_prose(response.get("description", ""))}'
            f"</td><td>{'<br>'.join(bodies)}</td></tr>"
        )
    out.append("</table></section>")
    return "\n".join(out)


def render(doc: Mapping[str, Any]) -> str:
    """The whole page."""
    info = doc.get("info", {})
    by_tag: dict[str, list[str]] = {}
    for path, item in doc.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append(_operation(doc, path, method, op, shared))
    tags = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    nav = " ".join(f'<a href="#tag-{_e(t)}">{_e(t)}</a>' for t in by_tag)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(info.get('title', 'API'))} API</title><style>{_STYLE}</style></head>",
        "<body><main>",
        f"<h1>{_e(info.get('title', 'API'))} <small>{_e(info.get('version', ''))}</small></h1>",
        f'<p class="desc">{_prose(info.get("description", ""))}</p>',
        f'<nav>{nav} <a href="#schemas">schemas</a> <a href="/openapi.json">openapi.json</a></nav>',
    ]
    for tag, ops in by_tag.items():
        parts.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>')
        if tags.get(tag):
            parts.append(f"<p>{_e(tags[tag])}</p>")
        parts.extend(ops)
    parts.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        parts.append(
            f'<h3 id="schema-{_e(name)}"><code>{_e(name)}</code></h3>'
            f"<pre>{_e(json.dumps(schema, indent=2))}</pre>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)
