"""`/docs`: the OpenAPI document as one plain HTML page (no UI fetched from a CDN; this machine
may reach nothing outside): every route with its role, parameters, body fields and replies."""

from __future__ import annotations

from html import escape
from typing import Any

ROLE = {"read": "viewer, agent or captain token", "captain": "captain token", "agent": "that agent's token",
        "messages": "agent or captain token", "health": "no token"}


def render(spec: dict[str, Any]) -> str:
    """The page for an OpenAPI document."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    info = spec.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>", escape(info.get("title", "API")),
        "</title><link rel='icon' href='data:,'>",
        "<link rel='stylesheet' href='/static/board.css'></head><body class='docs'><main>",
        f"<h1>{escape(info.get('title', 'API'))} <small>{escape(info.get('version', ''))}</small></h1>",
        "<p class='lead'>", escape(info.get("description", "")).replace("\n\n", "</p><p>"),
        "</p><p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(_operation(method, path, op, schemas))
    parts.append("</main></body></html>")
    return "".join(parts)


def _operation(method: str, path: str, op: dict[str, Any], schemas: dict[str, Any]) -> str:
    tag = (op.get("tags") or ["read"])[0]
    out = [f"<section class='op'><h2><code class='verb'>{method.upper()}</code> <code>{escape(path)}</code></h2>",
           f"<p class='who'>needs: {escape(ROLE.get(tag, 'a token'))}</p>",
           f"<p>{escape(op.get('description') or op.get('summary') or '')}</p>"]
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>")
        for p in params:
            out.append(f"<tr><td><code>{escape(p['name'])}</code>{'' if p.get('required') else '?'}</td>"
                       f"<td>{escape(p['in'])}</td><td>{escape(_type(p.get('schema', {}), schemas))}</td>"
                       f"<td>{escape(p.get('description', ''))}</td></tr>")
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        out.append(f"<p>JSON body: {_fields(body, schemas)}</p>")
    replies = ", ".join(f"<code>{escape(code)}</code> {escape(r.get('description', ''))}"
                        for code, r in op.get("responses", {}).items())
    out.append(f"<p class='replies'>replies: {replies}</p></section>")
    return "".join(out)


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else schema


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in schema:
        return " | ".join(_type(s, schemas) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), schemas)}"
    limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "maxLength", "pattern") if k in schema]
    return kind + (f" ({', '.join(limits)})" if limits else "")


def _fields(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    resolved = _resolve(schema, schemas)
    required = set(resolved.get("required", []))
    fields = [f"<code>{escape(name)}</code>{'' if name in required else '?'}: {escape(_type(s, schemas))}"
              for name, s in resolved.get("properties", {}).items()]
    return "{" + ", ".join(fields) + "}"
