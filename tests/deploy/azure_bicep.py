"""Read a Bicep file into plain data with tree-sitter-bicep (a Bicep grammar from PyPI).

This is a parser, not the Bicep compiler: it proves the file is syntactically Bicep and gives each
resource's type, API version and body as dicts and lists. Literals stay Python values; anything
computed (a reference, a function call, an interpolated string) becomes an `Expr` that knows its
type where Bicep would (a parameter's declared type, an interpolated string, `string(...)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

# What some Bicep functions return, for type checks; any other call is of unknown type.
STRING_FUNCTIONS = frozenset(
    {"guid", "uniqueString", "string", "subscriptionResourceId", "resourceId", "format", "toLower"}
)
INT_FUNCTIONS = frozenset({"int", "length"})
# Bicep keys of a resource body that are not part of the resource's REST body.
BICEP_KEYS = frozenset({"parent", "scope", "dependsOn"})


class BicepSyntaxError(ValueError):
    """The file is not valid Bicep syntax."""


@dataclass(frozen=True)
class Expr:
    """A value computed at deployment time. `kind` is "str", "int", "bool" or "any"."""

    text: str
    kind: str = "any"


@dataclass
class Resource:
    symbol: str
    type: str
    api_version: str
    body: dict[str, Any]
    conditional: bool
    line: int

    def rest_body(self) -> dict[str, Any]:
        """The body without Bicep's own keys (parent, scope, dependsOn) and without `name`."""
        return {k: v for k, v in self.body.items() if k not in BICEP_KEYS and k != "name"}


@dataclass
class Template:
    params: dict[str, str] = field(default_factory=dict)  # name -> declared type
    defaults: dict[str, Any] = field(default_factory=dict)  # parameter name -> default value
    variables: dict[str, Any] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # every name used in an expression, and every member path that starts at a name
    names_used: set[str] = field(default_factory=set)
    member_paths: set[tuple[str, ...]] = field(default_factory=set)

    @property
    def declared(self) -> set[str]:
        return {*self.params, *self.variables, *(r.symbol for r in self.resources), *self.outputs}

    def resource(self, symbol: str) -> Resource:
        return next(r for r in self.resources if r.symbol == symbol)


def parse_bicep(source: str) -> Template:
    """The template in `source`; BicepSyntaxError names the lines that do not parse."""
    data = source.encode()
    tree = Parser(Language(tree_sitter_bicep.language())).parse(data)
    bad = sorted(
        {n.start_point[0] + 1 for n in _walk(tree.root_node) if n.is_error or n.is_missing}
    )
    if tree.root_node.has_error:
        raise BicepSyntaxError(f"not valid Bicep at line(s) {bad or '?'}")
    return _Reader(data).template(tree.root_node)


def read_bicep(path: Path) -> Template:
    return parse_bicep(path.read_text())


def _walk(node: Node) -> list[Node]:
    found = [node]
    for child in node.children:
        found.extend(_walk(child))
    return found


class _Reader:
    def __init__(self, source: bytes) -> None:
        self.source = source
        self.out = Template()

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode()

    def template(self, root: Node) -> Template:
        for node in root.named_children:
            kind = node.type
            if kind == "parameter_declaration":
                name, declared = node.named_children[0], node.named_children[1]
                self.out.params[self.text(name)] = self.text(declared)
                for default in node.named_children[2:]:
                    self.out.defaults[self.text(name)] = self.value(default)
            elif kind == "variable_declaration":
                name, value = node.named_children[0], node.named_children[-1]
                self.out.variables[self.text(name)] = self.value(value)
            elif kind == "resource_declaration":
                self.out.resources.append(self.resource(node))
            elif kind == "output_declaration":
                name, value = node.named_children[0], node.named_children[-1]
                self.out.outputs[self.text(name)] = self.value(value)
        return self.out

    def resource(self, node: Node) -> Resource:
        symbol, type_string, body = (
            node.named_children[0],
            node.named_children[1],
            node.named_children[-1],
        )
        conditional = body.type == "if_statement"
        if conditional:
            condition, body = body.named_children[0], body.named_children[-1]
            self.value(condition)
        type_name, _, api_version = self.string(type_string).partition("@")
        value = self.value(body)
        if not isinstance(value, dict):
            raise BicepSyntaxError(f"resource {self.text(symbol)}: the body is not an object")
        return Resource(
            self.text(symbol), type_name, api_version, value, conditional, node.start_point[0] + 1
        )

    def string(self, node: Node) -> str:
        return "".join(self.text(c) for c in node.named_children if c.type == "string_content")

    def value(self, node: Node) -> Any:
        kind = node.type
        if kind == "object":
            found: dict[str, Any] = {}
            for prop in node.named_children:
                if prop.type != "object_property":
                    continue
                key, value = prop.named_children[0], prop.named_children[-1]
                name = self.string(key) if key.type == "string" else self.text(key)
                found[name] = self.value(value)
            return found
        if kind == "array":
            return [self.value(item) for item in node.named_children if item.type != "comment"]
        if kind == "string":
            parts = [c for c in node.named_children if c.type == "interpolation"]
            for part in parts:
                for inner in part.named_children:
                    self.value(inner)
            if parts:
                return Expr(self.text(node), "str")
            return self.text(node)[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        if kind == "number":
            return int(self.text(node))
        if kind in ("boolean", "true", "false"):
            return self.text(node) == "true"
        if kind == "null":
            return None
        if kind == "identifier":
            name = self.text(node)
            self.out.names_used.add(name)
            return self.named(name, self.text(node))
        if kind == "member_expression":
            path = self.member_path(node)
            if path:
                self.out.member_paths.add(path)
            return Expr(self.text(node))
        if kind == "call_expression":
            callee = node.child_by_field_name("function")
            arguments = node.child_by_field_name("arguments")
            for argument in arguments.named_children if arguments else []:
                self.value(argument)
            name = self.text(callee) if callee is not None else ""
            if callee is not None and callee.type == "member_expression":
                self.member_path(callee)  # a resource function such as listKeys(): not a property
            elif callee is not None and callee.type != "identifier":
                self.value(callee)
            kind_of = (
                "str" if name in STRING_FUNCTIONS else "int" if name in INT_FUNCTIONS else "any"
            )
            return Expr(self.text(node), kind_of)
        for child in node.named_children:  # parenthesized, subscript, ternary, binary, ...
            self.value(child)
        return Expr(self.text(node))

    def named(self, name: str, text: str) -> Any:
        """What a bare name stands for: a variable's value, or a parameter's type."""
        if name in self.out.variables:
            return self.out.variables[name]
        declared = self.out.params.get(name)
        kinds = {"string": "str", "int": "int", "bool": "bool"}
        return Expr(text, kinds.get(declared or "", "any"))

    def member_path(self, node: Node) -> tuple[str, ...]:
        """`a.b.c` as ("a", "b", "c"), recording `a`; () when the chain has a call or index."""
        names: list[str] = []
        while node.type == "member_expression":
            obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
            if obj is None or prop is None:
                return ()
            names.append(self.text(prop))
            node = obj
        if node.type != "identifier":
            self.value(node)
            return ()
        self.out.names_used.add(self.text(node))
        return (self.text(node), *reversed(names))
