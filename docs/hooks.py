"""MkDocs hooks: the reference pages that are generated from the code, so that they cannot drift from it.

A page asks for generated text with an HTML comment on a line of its own:

* ``<!-- generate: cli -->``: every command of the Typer app, its usage, help and options (as ``--help``
  prints them);
* ``<!-- generate: python-api -->``: mkdocstrings entries for every name of ``filterscope.__all__``, grouped
  as ``__all__`` groups them;
* ``<!-- generate: json-api -->``: every operation of the microscope's OpenAPI schema;
* ``<!-- generate: recipe-fields -->``: every field of :class:`filterscope.Recipe` with its value in each named
  recipe and its meaning (from the table in ``filterscope/engine/recipes.py``);
* ``<!-- generate: atlas-schema -->``: every table and column of the atlas database, as its schema creates them;
* ``<!-- include: PATH -->``: a file of the repository (its headings one level down).

Hand-written because MkDocs plugins for these (mkdocs-click, a swagger page) either do not know Typer's
own option classes or load scripts from a CDN, which an offline site cannot.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^<!-- (generate|include): (\S+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return DIRECTIVE.sub(lambda m: _expand(m.group(1), m.group(2)), markdown)


def _expand(kind: str, name: str) -> str:
    if kind == "include":
        text = (ROOT / name).read_text(encoding="utf-8")
        return _demote(text.split("\n", 1)[1] if text.startswith("# ") else text)  # the page has its own title
    return {"cli": cli_reference, "python-api": python_reference, "json-api": json_api_reference,
            "recipe-fields": recipe_fields, "atlas-schema": atlas_schema}[name]()


def _demote(text: str) -> str:
    inside, lines = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        lines.append("#" + line if line.startswith("#") and not inside else line)
    return "\n".join(lines)


# --- the command line ---------------------------------------------------------------------------------------------

def cli_reference() -> str:
    import typer.main

    from filterscope.cli import app

    root = typer.main.get_command(app)
    return "\n".join(_command_page(command, path) for path, command in _commands(root, ["filterscope"]))


def _commands(command, path: list[str]):
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path, command
        return
    if len(path) > 1:
        yield path, command
    for name, sub in subcommands.items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name])


def _command_page(command, path: list[str]) -> str:
    ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
    usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), " ".join([*path, *command.collect_usage_pieces(ctx)]))
    paragraphs = (command.help or "").strip().split("\n\n")
    lines = [f"## `{' '.join(path)}`", "", paragraphs[0], "", "```text", usage, "```", ""]
    lines += [p for paragraph in paragraphs[1:] for p in (paragraph.replace("\n", " "), "")]
    records = [(p, p.get_help_record(ctx)) for p in command.params if not getattr(p, "hidden", False)]
    rows = [(names, text) for _, record in records if record for names, text in [record]]
    if rows:
        lines += ["| option | meaning |", "|---|---|"]
        lines += [f"| `{_cell(names)}` | {_cell(text)} |" for names, text in rows]
        lines.append("")
    subcommands = getattr(command, "commands", None)
    if subcommands:
        lines += ["Commands: " + ", ".join(f"`{name}`" for name in subcommands), ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- the Python API ---------------------------------------------------------------------------------------------

def python_reference() -> str:
    import filterscope as fs

    source = (ROOT / "src" / "filterscope" / "__init__.py").read_text(encoding="utf-8")
    block = source[source.index("__all__ = ["):]
    block = block[:block.index("\n]\n")]
    lines: list[str] = []
    for line in block.splitlines()[1:]:
        line = line.strip()
        if line.startswith("#"):
            lines += ["", f"## {line.lstrip('# ').capitalize()}", ""]
            continue
        for name in re.findall(r'"(\w+)"', line):
            if name != "__version__":
                lines += [f"::: {_qualified(fs, name)}", ""]
    return "\n".join(lines)


def _qualified(fs, name: str) -> str:
    value = getattr(fs, name)
    module = getattr(value, "__module__", None)
    if callable(value) and module and module.startswith("filterscope") and getattr(value, "__qualname__", "") == name:
        return f"{module}.{name}"
    return f"filterscope{fs._EXPORTS[name]}.{name}"  # constants and registries: where the package takes them from


# --- the microscope's JSON API -------------------------------------------------------------------------------

def json_api_reference() -> str:
    from filterscope.atlas import Atlas
    from filterscope.microscope import create_app

    with tempfile.TemporaryDirectory() as folder:
        Atlas(folder).close()
        schema = create_app(folder).openapi()
    lines = ["| method | path | what it does | parameters | answers |", "|---|---|---|---|---|"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            summary = (operation.get("description") or operation.get("summary") or "").strip().split("\n\n")[0]
            parameters = ", ".join(f"`{p['name']}` ({p['in']})" for p in operation.get("parameters", []))
            answers = "; ".join(f"{status} {_answer(answer)}".strip()
                                for status, answer in sorted(operation["responses"].items()))
            lines.append(f"| {method.upper()} | `{path}` | {_cell(summary)} | {parameters} | {answers} |")
    lines += ["", "## What each answer holds", "",
              "Each JSON answer's fields (from `filterscope.microscope.schemas`; every answer is checked against "
              "them by the tests, and none has a field not listed):", ""]
    for name, component in schema["components"]["schemas"].items():
        fields = ", ".join(f"`{field}` ({_json_type(kind)})" for field, kind in component.get("properties", {}).items())
        lines.append(f"- **{name}**: {fields}")
    return "\n".join(lines)


def _answer(answer: dict) -> str:
    """An answer in a few words: its schema's name, or its media type."""
    content = answer.get("content", {})
    if "application/json" in content:
        return _json_type(content["application/json"].get("schema", {}))
    return ", ".join(f"`{media}`" for media in content)


def _json_type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_json_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_json_type(schema.get('items', {}))}"
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_json_type(schema['additionalProperties'])}"
    return str(schema.get("type", "any"))


# --- the recipe -------------------------------------------------------------------------------------------------

def recipe_fields() -> str:
    import dataclasses

    from filterscope.engine import recipes

    meanings = _field_meanings(recipes.__doc__ or "")
    named = list(recipes.RECIPES)
    lines = ["| field | " + " | ".join(f"`{n}`" for n in named) + " | meaning |",
             "|---|" + "---|" * len(named) + "---|"]
    for field in dataclasses.fields(recipes.Recipe):
        values = [_value(getattr(recipes.RECIPES[n], field.name)) for n in named]
        lines.append(f"| `{field.name}` | " + " | ".join(values) + f" | {_cell(meanings.get(field.name, ''))} |")
    return "\n".join(lines)


def _field_meanings(doc: str) -> dict[str, str]:
    """The meaning column of the field table in ``recipes.py``'s docstring, by field name."""
    rules = [i for i, line in enumerate(doc.splitlines()) if line.startswith("=" * 20)]
    table = "\n".join(doc.splitlines()[rules[1] + 1:rules[2]])
    meanings: dict[str, str] = {}
    names: list[str] = []
    for line in table.splitlines():
        if line[:20].strip():
            head = line[:20].strip()
            names = [n.strip() for n in head.split(",")]
            if head == "noise_mean/amplitude":
                names = ["noise_mean", "noise_amplitude"]
            for n in names:
                meanings[n] = line[31:].strip()
        else:
            for n in names:
                meanings[n] += " " + line.strip()
    return meanings


def _value(value) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, float):
        return f"{value:.4g}"
    return _cell(str(value))


# --- the atlas database -------------------------------------------------------------------------------------

def atlas_schema() -> str:
    import sqlite3

    from filterscope.atlas.schema import SCHEMA, SCHEMA_VERSION

    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    lines = [f"Schema version {SCHEMA_VERSION}.", "", "| table | columns (type, `*` primary key, `!` not null) |",
             "|---|---|"]
    for table in tables:
        columns = [f"`{name}` {kind.lower()}{' *' if key else ''}{' !' if notnull and not key else ''}"
                   for _, name, kind, notnull, _, key in db.execute(f"PRAGMA table_info({table})")]
        lines.append(f"| `{table}` | {', '.join(columns)} |")
    db.close()
    return "\n".join(lines)
