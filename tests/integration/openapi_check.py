"""A small checker for the part of OpenAPI 3.0 that docs/openapi.yaml uses.

It knows the keywords listed in ``KEYWORDS`` and refuses a document using any other, so a
schema can never be silently half-checked. OpenAPI 3.0 semantics: ``nullable: true`` admits
``null``; ``additionalProperties`` defaults to allowing anything; ``$ref`` points inside the
document only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
KEYWORDS = {
    "type", "nullable", "required", "properties", "additionalProperties", "items", "enum",
    "pattern", "minLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "minimum", "maximum", "format", "$ref", "allOf", "description", "example", "default",
}
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}
METHODS = ("get", "put", "post", "delete", "head", "patch")


class OpenAPI:
    def __init__(self, path: Path = DOC) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(path.read_text())
        self._routes: list[tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            rx = re.sub(r"\{(\w+)\}", lambda m: "(.+)" if m.group(1) == "name" else "([^/]+)",
                        template)
            self._routes.append((re.compile(f"^{rx}/?$"), template))
        # Literal paths before templated ones: /networks/create is not /networks/{id}.
        self._routes.sort(key=lambda r: r[1].count("{"))
        for problem in self.lint():
            raise AssertionError(f"{path}: {problem}")

    # -- the document itself ----------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise AssertionError(f"only local $ref are supported: {ref}")
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def schema(self, name: str) -> dict[str, Any]:
        return dict(self.doc["components"]["schemas"][name])

    def lint(self) -> list[str]:
        """Unknown keywords, dangling $refs, required keys that are not properties."""
        problems: list[str] = []
        for name, s in self.doc["components"]["schemas"].items():
            self._lint_schema(s, name, problems)
        for template, item in self.doc["paths"].items():
            for method, op in item.items():
                if method not in METHODS:
                    continue
                body = op.get("requestBody")
                if body:
                    self._lint_content(self.resolve(body).get("content", {}),
                                       f"{method} {template}", problems)
                for status, resp in op.get("responses", {}).items():
                    self._lint_content(self.resolve(resp).get("content", {}),
                                       f"{method} {template} {status}", problems)
        return problems

    def _lint_content(self, content: dict[str, Any], where: str, problems: list[str]) -> None:
        for ctype, media in content.items():
            if "schema" in media:
                self._lint_schema(media["schema"], f"{where} {ctype}", problems)

    def _lint_schema(self, s: Any, where: str, problems: list[str]) -> None:
        if not isinstance(s, dict):
            problems.append(f"{where}: a schema must be a mapping")
            return
        problems += [f"{where}: unsupported keyword {k!r}" for k in s if k not in KEYWORDS]
        if "$ref" in s:
            try:
                self.resolve({"$ref": s["$ref"]})
            except (KeyError, TypeError):
                problems.append(f"{where}: dangling $ref {s['$ref']}")
            return
        if "type" in s and s["type"] not in TYPES:
            problems.append(f"{where}: unknown type {s['type']!r}")
        props = s.get("properties", {})
        for name, sub in props.items():
            self._lint_schema(sub, f"{where}.{name}", problems)
        problems += [f"{where}: required {name!r} is not a property"
                     for name in s.get("required", []) if name not in props]
        if isinstance(s.get("additionalProperties"), dict):
            self._lint_schema(s["additionalProperties"], f"{where}.*", problems)
        if "items" in s:
            self._lint_schema(s["items"], f"{where}[]", problems)
        for i, sub in enumerate(s.get("allOf", [])):
            self._lint_schema(sub, f"{where}.allOf[{i}]", problems)

    def operations(self) -> set[tuple[str, str]]:
        return {(m.upper(), t) for t, item in self.doc["paths"].items() for m in item
                if m in METHODS}

    # -- requests and responses -------------------------------------------------------------

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """The documented operation serving ``path`` (no version prefix, no query)."""
        method = method.lower()
        if method == "head":
            method = "get"
        for rx, template in self._routes:
            if rx.match(path) and method in self.doc["paths"][template]:
                return template, self.doc["paths"][template][method]
        raise AssertionError(f"{method.upper()} {path} is not in the OpenAPI document")

    def response(self, method: str, path: str, status: int) -> dict[str, Any]:
        template, op = self.operation(method, path)
        resp = op["responses"].get(str(status))
        if resp is None:
            raise AssertionError(f"{method} {template}: status {status} is not documented "
                                 f"(documented: {sorted(op['responses'])})")
        return dict(self.resolve(resp))

    def request_schema(self, method: str, path: str) -> dict[str, Any]:
        _, op = self.operation(method, path)
        body = self.resolve(op["requestBody"])
        return dict(body["content"]["application/json"]["schema"])

    # -- validation -------------------------------------------------------------------------

    def validate(self, instance: Any, schema: dict[str, Any], where: str = "$") -> None:
        errors = self.errors(instance, schema, where)
        if errors:
            raise AssertionError("does not match the OpenAPI schema:\n  " +
                                 "\n  ".join(errors[:20]))

    def errors(self, x: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
        s = self.resolve(schema)
        if x is None:
            if s.get("nullable") or any(self.resolve(a).get("nullable")
                                        for a in s.get("allOf", [])):
                return []
            if "type" in s or "allOf" in s:
                return [f"{where}: null is not allowed"]
        out: list[str] = []
        for sub in s.get("allOf", []):
            out += self.errors(x, sub, where)
        t = s.get("type")
        if t is not None:
            ok = isinstance(x, TYPES[t]) and not (t in ("integer", "number") and
                                                  isinstance(x, bool))
            if not ok:
                return [*out, f"{where}: expected {t}, got {type(x).__name__} {x!r:.60}"]
        if "enum" in s and x not in s["enum"]:
            out.append(f"{where}: {x!r} not in {s['enum']}")
        if isinstance(x, str):
            out += _string_errors(x, s, where)
        if isinstance(x, int | float) and not isinstance(x, bool):
            out += _number_errors(x, s, where)
        if isinstance(x, list):
            out += self._list_errors(x, s, where)
        if isinstance(x, dict):
            out += self._dict_errors(x, s, where)
        return out

    def _list_errors(self, x: list[Any], s: dict[str, Any], where: str) -> list[str]:
        out: list[str] = []
        if len(x) < s.get("minItems", 0):
            out.append(f"{where}: fewer than {s['minItems']} items")
        if "maxItems" in s and len(x) > s["maxItems"]:
            out.append(f"{where}: more than {s['maxItems']} items")
        if "items" in s:
            for i, item in enumerate(x):
                out += self.errors(item, s["items"], f"{where}[{i}]")
        return out

    def _dict_errors(self, x: dict[str, Any], s: dict[str, Any], where: str) -> list[str]:
        out: list[str] = []
        if len(x) < s.get("minProperties", 0):
            out.append(f"{where}: fewer than {s['minProperties']} keys")
        if "maxProperties" in s and len(x) > s["maxProperties"]:
            out.append(f"{where}: more than {s['maxProperties']} keys")
        props = s.get("properties", {})
        out += [f"{where}: missing required {name!r}"
                for name in s.get("required", []) if name not in x]
        extra = s.get("additionalProperties", True)
        for k, v in x.items():
            if k in props:
                out += self.errors(v, props[k], f"{where}.{k}")
            elif extra is False:
                out.append(f"{where}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                out += self.errors(v, extra, f"{where}.{k}")
        return out


def _string_errors(x: str, s: dict[str, Any], where: str) -> list[str]:
    out: list[str] = []
    if "pattern" in s and not re.search(s["pattern"], x):
        out.append(f"{where}: {x!r} does not match {s['pattern']!r}")
    if len(x) < s.get("minLength", 0):
        out.append(f"{where}: shorter than {s['minLength']}")
    if s.get("format") == "date-time" and not RFC3339.match(x):
        out.append(f"{where}: {x!r} is not an RFC 3339 date-time")
    return out


def _number_errors(x: float, s: dict[str, Any], where: str) -> list[str]:
    out: list[str] = []
    if "minimum" in s and x < s["minimum"]:
        out.append(f"{where}: {x} < {s['minimum']}")
    if "maximum" in s and x > s["maximum"]:
        out.append(f"{where}: {x} > {s['maximum']}")
    return out
