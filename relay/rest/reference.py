"""The API reference page: the OpenAPI document as one static HTML page.

`render(document)` turns the document (relay.rest.openapi) into plain HTML and CSS, no script and
nothing fetched from elsewhere, so it works offline and under `CSP`: every operation by tag with
its parameters, body, responses and error codes, then every schema with its fields. Pure: the
same document gives the same page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #fbfbfd; }
header, main { max-width: 64rem; margin: 0 auto; padding: 0 1.5rem; }
header { padding-top: 1.5rem; }
h1 small { font-weight: normal; color: #667; font-size: 1rem; }
h2 { margin-top: 2.5rem; border-bottom: 2px solid #dde; text-transform: capitalize; }
h3 { font-size: 1.05rem; margin: 0 0 0.3rem; }
nav { columns: 2 22rem; font-size: 0.9rem; margin: 1rem 0; }
nav a { text-decoration: none; }
.verb { display: inline-block; width: 3.6rem; font: 600 0.75rem ui-monospace, monospace; }
.verb.get { color: #2f6fb0; } .verb.post { color: #2f8f4e; } .verb.put { color: #8a5a00; }
.verb.patch { color: #6a4bb0; } .verb.delete { color: #b03030; }
nav section { break-inside: avoid; margin-bottom: 0.8rem; }
nav ul { list-style: none; padding: 0; margin: 0; }
article { background: #fff; border: 1px solid #dde; border-radius: 6px; padding: 1rem;
  margin: 1rem 0; }
code, .path { font-family: ui-monospace, monospace; font-size: 0.9em; }
.method { display: inline-block; min-width: 4.2rem; text-align: center; border-radius: 4px;
  color: #fff; font-size: 0.8rem; padding: 0.1rem 0.3rem; margin-right: 0.4rem; }
.method.get { background: #2f6fb0; } .method.post { background: #2f8f4e; }
.method.put { background: #8a5a00; } .method.patch { background: #6a4bb0; }
.method.delete { background: #b03030; }
.path { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 0.4rem 0 0.8rem; font-size: 0.9rem; }
th, td { text-align: left; vertical-align: top; padding: 0.25rem 0.5rem;
  border-bottom: 1px solid #eef; }
th { color: #556; font-weight: 600; }
.muted { color: #667; }
.status { font-weight: 600; }
.err .status { color: #a33; }
h4 { margin: 0.8rem 0 0.2rem; font-size: 0.95rem; }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_PREFIX = "#/components/schemas/"
_AUTH = {
    "bearer": "Bearer token",
    "optional": "Bearer token, if sent",
    "none": "none",
}


def render(document: Mapping[str, Any]) -> str:
    """The reference page of an OpenAPI document made by relay.rest.openapi."""
    info = document["info"]
    tags = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {name: [] for name in tags}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for tag in operation.get("tags", ["other"]):
                by_tag.setdefault(tag, []).append((path, method, operation))
    schemas: Mapping[str, Any] = document.get("components", {}).get("schemas", {})

    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(info['title'])} API reference</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header>",
        f"<h1>{escape(info['title'])} API <small>{escape(info['version'])}</small></h1>",
        f"<p>{_text(info.get('description', ''))}</p>",
        '<p>The same, machine-readable: <a href="openapi.json">openapi.json</a> '
        f"(OpenAPI {escape(document['openapi'])}).</p>",
        "<nav>",
    ]
    for tag, operations in by_tag.items():
        out.append(f'<section><a href="#tag-{escape(tag)}"><b>{escape(tag)}</b></a><ul>')
        for path, method, operation in operations:
            out.append(
                f'<li><a href="#op-{escape(operation["operationId"])}">'
                f"<span class='verb {method}'>{method.upper()}</span> "
                f"{_text(operation.get('summary', path))}</a></li>"
            )
        out.append("</ul></section>")
    out.append('<section><a href="#schemas"><b>schemas</b></a></section></nav></header><main>')
    for tag, operations in by_tag.items():
        out.append(f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>')
        if tags.get(tag):
            out.append(f"<p class=muted>{_text(tags[tag])}</p>")
        out.extend(_operation(path, method, op) for path, method, op in operations)
    out.append('<h2 id="schemas">Schemas</h2>')
    out.extend(_schema_article(name, schema) for name, schema in schemas.items())
    out.append("</main></body></html>")
    return "\n".join(out)


def _operation(path: str, method: str, operation: Mapping[str, Any]) -> str:
    out = [
        f'<article id="op-{escape(operation["operationId"])}">',
        f"<h3><span class='method {method}'>{method.upper()}</span>"
        f"<span class=path>{escape(path)}</span></h3>",
        f"<p>{_text(operation.get('summary', ''))}</p>",
    ]
    if operation.get("description"):
        out.append(f"<p class=muted>{_text(operation['description'])}</p>")
    out.append(f"<p><b>Auth:</b> {_auth(operation.get('security', []))}</p>")
    parameters = operation.get("parameters", [])
    if parameters:
        out.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>")
        out.append("<th>required</th><th>description</th></tr>")
        for p in parameters:
            out.append(
                f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
                f"<td>{_type(p.get('schema', {}))}</td><td>{'yes' if p.get('required') else ''}"
                f"</td><td>{_text(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = operation.get("requestBody")
    if body is not None:
        schema = body["content"]["application/json"]["schema"]
        optional = "" if body.get("required") else " (optional)"
        out.append(f"<h4>Body{optional}</h4><p>JSON: {_type(schema)}</p>")
    out.append("<h4>Responses</h4><table>")
    for status, response in operation["responses"].items():
        out.append(_response(status, response))
    out.append("</table></article>")
    return "\n".join(out)


def _auth(security: Iterable[Mapping[str, Any]]) -> str:
    kinds = ["bearer" if requirement else "none" for requirement in security]
    if kinds == ["bearer"]:
        return _AUTH["bearer"]
    return _AUTH["optional"] if "bearer" in kinds else _AUTH["none"]


def _response(status: str, response: Mapping[str, Any]) -> str:
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    description = response.get("description", "")
    if schema is None:
        return (
            f"<tr><td class=status>{escape(status)}</td>"
            f"<td>no content <span class=muted>{_text(description)}</span></td></tr>"
        )
    parts = schema.get("anyOf", [schema])
    errors = [p for p in parts if _is_error(p)]
    if not errors:
        return (
            f"<tr><td class=status>{escape(status)}</td>"
            f"<td>{_type(schema)} <span class=muted>{_text(description)}</span></td></tr>"
        )
    shapes = [_type(p) for p in parts if not _is_error(p)] + [_type(errors[0]["allOf"][0])]
    codes = errors[0]["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
    meanings = _meanings(description)
    rows = "".join(
        f"<li><code>{escape(code)}</code> {_text(meanings.get(code, ''))}</li>" for code in codes
    )
    headers = response.get("headers", {})
    names = ", ".join(f"<code>{escape(h)}</code>" for h in headers)
    extra = f"<p class=muted>Headers: {names}</p>" if headers else ""
    return (
        f"<tr class=err><td class=status>{escape(status)}</td>"
        f"<td>{' or '.join(shapes)}<ul>{rows}</ul>{extra}</td></tr>"
    )


def _is_error(schema: Mapping[str, Any]) -> bool:
    """An error response's schema as relay.rest.openapi makes it: Error and its codes."""
    return "allOf" in schema and schema["allOf"][0].get("$ref", "").endswith("/Error")


def _meanings(description: str) -> dict[str, str]:
    """Each code's meaning from an error response's description ("- `code`: meaning")."""
    found = {}
    for line in description.splitlines():
        code, sep, meaning = line.removeprefix("- `").partition("`: ")
        if sep:
            found[code] = meaning
    return found


def _schema_article(name: str, schema: Mapping[str, Any]) -> str:
    out = [f'<article id="schema-{escape(name)}"><h3>{escape(name)}</h3>']
    if schema.get("description"):
        out.append(f"<p class=muted>{_text(schema['description'])}</p>")
    properties = schema.get("properties")
    if properties is None:
        out.append(f"<p>{_type(schema)}</p>")
    elif not properties:
        out.append("<p>an object with no fields</p>")
    else:
        required = set(schema.get("required", ()))
        out.append("<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>")
        for field, prop in properties.items():
            out.append(
                f"<tr><td><code>{escape(field)}</code></td><td>{_type(prop)}</td>"
                f"<td>{'yes' if field in required else ''}</td>"
                f"<td>{_text(prop.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
        if schema.get("additionalProperties") is False:
            out.append("<p class=muted>Other fields are refused.</p>")
    out.append("</article>")
    return "\n".join(out)


def _type(schema: Mapping[str, Any]) -> str:
    """A schema in a few words of HTML: its type, its bounds, links to named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_PREFIX)
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "allOf" in schema:
        return " and ".join(_type(s) for s in schema["allOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(_json(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(_json(schema['const']))}</code>"
    kind = schema.get("type")
    if kind is None:
        return "any JSON"
    if isinstance(kind, list):
        text = " or ".join(escape(str(k)) for k in kind)
    elif kind == "array":
        text = f"array of {_type(schema.get('items', {}))}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of string to {_type(schema['additionalProperties'])}"
    else:
        text = escape(kind)
    bounds = _bounds(schema)
    return f"{text} <span class=muted>({bounds})</span>" if bounds else text


def _bounds(schema: Mapping[str, Any]) -> str:
    parts = []
    for low, high, unit in (
        ("minLength", "maxLength", "characters"),
        ("minimum", "maximum", ""),
        ("minItems", "maxItems", "items"),
    ):
        if low in schema or high in schema:
            lo, hi = schema.get(low), schema.get(high)
            if lo is not None and hi is not None:
                parts.append(f"{lo} to {hi} {unit}".strip())
            elif lo is not None:
                parts.append(f"at least {lo} {unit}".strip())
            else:
                parts.append(f"at most {hi} {unit}".strip())
    if "pattern" in schema:
        parts.append(f"matching <code>{escape(schema['pattern'])}</code>")
    if "default" in schema:
        parts.append(f"default <code>{escape(_json(schema['default']))}</code>")
    return "; ".join(parts)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _text(text: str) -> str:
    """Escaped prose, with `code` spans kept as code."""
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
