"""Output shaped like the docker CLI's: tabwriter tables, go-units wording, `--format`.

People and scripts compare `nsnet` output with `docker`'s, so the rules here copy docker's
(text/tabwriter with minwidth 10 and padding 3, go-units HumanDuration and HumanSize) rather
than what would look nicest.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from nsnet.humanize import human_duration

TAB_MINWIDTH = 10
TAB_PADDING = 3


class FormatError(Exception):
    """A `--format` template this CLI cannot render."""


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Align cells like Go's tabwriter(minwidth=10, tabwidth=1, padding=3): the last cell of a
    row is never padded, every other column is as wide as its widest cell plus padding."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [TAB_MINWIDTH] * ncols
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + TAB_PADDING)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        if row:
            cells.append(row[-1])
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def since(timestamp: float, now: float | None = None) -> str:
    """`docker ps` CREATED column: "5 minutes ago"."""
    if now is None:
        now = time.time()
    return f"{human_duration(max(0.0, now - timestamp))} ago"


_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _scaled(size: float, base: float, units: Sequence[str]) -> tuple[float, str]:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 3 significant digits ("4.26MB")."""
    value, unit = _scaled(float(size), 1000.0, _DECIMAL_UNITS)
    return f"{value:.3g}{unit}"


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units with two decimals trimmed ("3.84GiB")."""
    value, unit = _scaled(float(size), 1024.0, _BINARY_UNITS)
    return f"{value:.4g}{unit}"


def ellipsis(text: str, width: int) -> str:
    """docker's formatter.Ellipsis: cut to `width` characters, the last one being "…"."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return text[0]
    return text[: width - 1] + "…"


def go_quote(text: str) -> str:
    """Close enough to Go's strconv.Quote for command lines."""
    return json.dumps(text, ensure_ascii=False)


def go_time(value: datetime) -> str:
    """Go's time.Time.String(): "2025-01-02 15:04:05.123 +0000 UTC"."""
    base = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        base += f".{value.microsecond:06d}".rstrip("0")
    offset = value.strftime("%z") or "+0000"
    zone = value.tzname() or ""
    if not zone or (zone.startswith("UTC") and zone != "UTC"):
        zone = offset
    return f"{base} {offset} {zone}"


def parse_rfc3339(value: str) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # The daemon may send nanoseconds (RFC3339Nano); datetime holds microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed


def unix_time(ts: float) -> str:
    """time.Unix(ts, 0).String(): local time, like docker prints CreatedAt."""
    return go_time(datetime.fromtimestamp(ts).astimezone())


def json_line(fields: Mapping[str, Any]) -> str:
    """`--format json`: one object per line, keys sorted like Go marshals a map."""
    return json.dumps(dict(sorted(fields.items())), ensure_ascii=False, separators=(",", ":"))


def json_indent(value: Any) -> str:
    """`inspect` output: the daemon's JSON re-indented with four spaces, like docker."""
    return json.dumps(value, indent=4, ensure_ascii=False)


_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_FIELD = re.compile(r"^\s*(json\s+)?(\.|(?:\.[A-Za-z_][A-Za-z0-9_-]*)+)\s*$")
_MISSING = object()


def _go_str(value: Any) -> str:
    """How text/template prints a value decoded from JSON."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_str(v) for v in value) + "]"
    return str(value)


def _lookup(fields: Mapping[str, Any], path: str, strict: bool) -> Any:
    if path == ".":
        return dict(sorted(fields.items())) if strict else fields
    value: Any = fields
    names = path[1:].split(".")
    for depth, name in enumerate(names):
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        elif strict and depth == 0:
            raise FormatError(
                f'template: :1: executing "" at <.{name}>: can\'t evaluate field {name}'
            )
        elif isinstance(value, Mapping) or value is None:
            return _MISSING
        else:
            raise FormatError(
                f'template: :1: executing "" at <{path}>: can\'t evaluate field {name} '
                f"in type {type(value).__name__}"
            )
    return value


def _render_action(action: str, fields: Mapping[str, Any], strict: bool) -> str:
    m = _FIELD.match(action)
    if not m:
        raise FormatError(
            f"unsupported template action {{{{{action.strip()}}}}}: "
            "only {{.Field.Sub}}, {{json .Field}} and {{json .}} are understood"
        )
    as_json, path = m.group(1), m.group(2)
    value = _lookup(fields, path, strict)
    if value is _MISSING:
        return "null" if as_json else "<no value>"
    if as_json:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _go_str(value)


def _expand(template: str, fields: Mapping[str, Any], strict: bool) -> str:
    return _ACTION.sub(lambda m: _render_action(m.group(1), fields, strict), template)


def render(
    template: str,
    rows: Iterable[Mapping[str, Any]],
    headers: Mapping[str, str],
    *,
    strict: bool = True,
) -> str:
    """Render a docker `--format` value over rows of fields.

    Understood: `json`, `table` with or without a template, and Go-template-lite bodies made of
    `{{.Field}}`, `{{.A.B.C}}`, `{{json .Field}}` and `{{json .}}`, with `\\t` and `\\n`
    escapes. `strict` rows (listing contexts) refuse unknown fields like docker's typed
    contexts; raw objects (inspect) print `<no value>` as Go does for a missing map key.
    """
    rows = list(rows)
    template = template.strip(" ")
    if template == "json":
        return "".join(json_line(r) + "\n" for r in rows)
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    if template.startswith("table"):
        template = template[len("table") :].strip(" ")
        if not template:
            template = "\t".join("{{." + name + "}}" for name in headers)
        lines = [_expand_header(template, headers)]
        lines += [_expand(template, r, strict) for r in rows]
        return tabwrite([line.split("\t") for line in lines])
    return "".join(_expand(template, r, strict) + "\n" for r in rows)


def _expand_header(template: str, headers: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        fm = _FIELD.match(m.group(1))
        if not fm:
            raise FormatError(f"unsupported template action {{{{{m.group(1).strip()}}}}}")
        path = fm.group(2)
        if path == ".":
            return ""
        name = path[1:].split(".")[0]
        return headers.get(name, name.upper())

    return _ACTION.sub(one, template)
