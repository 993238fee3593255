"""A CloudFormation/SAM template read as CloudFormation reads it: short-form tags, parameters checked
against their constraints, intrinsic functions resolved, resources ordered by their dependencies.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "DEFAULT_TEMPLATE",
    "REPO_ROOT",
    "Deployed",
    "Resolver",
    "TemplateError",
    "deploy_order",
    "load_template",
    "resolve_parameters",
]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE: Final = REPO_ROOT / "template.yaml"
_NO_VALUE: Final = object()  # what {"Ref": "AWS::NoValue"} resolves to; removed from its container


class TemplateError(ValueError):
    """The template uses something the local stack cannot reproduce faithfully."""


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs here
    """A SafeLoader that reads CloudFormation short-form tags (``!Ref``, ``!Sub``...)."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = tag_suffix if tag_suffix in {"Ref", "Condition"} else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Load a CloudFormation/SAM YAML (or JSON) template, short-form tags as long-form dicts.

    Each call gets its own copy to change; the parse is kept per text (parsing template.yaml is
    about 0.1 s of CPU, and the tests deploy a stack for each of a few hundred tests).
    """
    loaded = copy.deepcopy(_parsed(path.read_text(encoding="utf-8")))
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return loaded


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> Any:
    return yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - safe loader subclass


@dataclass
class Deployed:
    """A created resource: what ``Ref`` returns and its ``Fn::GetAtt`` attributes."""

    ref: str
    attrs: dict[str, str] = field(default_factory=dict)


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Resolves intrinsic functions over parameters, pseudo parameters and created resources."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.deployed: dict[str, Deployed] = {}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            definitions = self.template.get("Conditions", {})
            if name not in definitions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = self._truth(definitions[name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                left, right = (self.resolve(x) for x in arg)
                return str(left) == str(right)
            if fn == "Fn::Not":
                return not self._truth(arg[0])
            if fn == "Fn::And":
                return all(self._truth(x) for x in arg)
            if fn == "Fn::Or":
                return any(self._truth(x) for x in arg)
        raise TemplateError(f"unsupported condition expression {node!r}")

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.deployed:
            return self.deployed[name].ref
        raise TemplateError(f"cannot resolve Ref {name!r} locally (not a parameter or deployed resource)")

    def get_att(self, logical_id: str, attribute: str) -> str:
        deployed = self.deployed.get(logical_id)
        if deployed is None or attribute not in deployed.attrs:
            raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} locally")
        return deployed.attrs[attribute]

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, node: Any) -> Any:
        """Resolve every intrinsic function in ``node``; ``AWS::NoValue`` entries are dropped."""
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, self.resolve(attribute))
            if fn == "Fn::Sub":
                if isinstance(arg, str):
                    return self._sub(arg, {})
                text, variables = arg
                return self._sub(text, self.resolve(variables))
            if fn == "Fn::If":
                name, if_true, if_false = arg
                return self.resolve(if_true if self.condition(name) else if_false)
            if fn == "Fn::Join":
                delimiter, items = arg
                return str(delimiter).join(str(x) for x in self.resolve(items))
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if fn == "Fn::Split":
                delimiter, text = arg
                return str(self.resolve(text)).split(delimiter)
            if fn.startswith("Fn::"):
                raise TemplateError(f"intrinsic function {fn} is not supported by the local stack")
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


def _references(node: Any) -> set[str]:
    """Logical names a template fragment refers to (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value.split(".", 1)[0] if isinstance(value, str) else value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                names = (m.strip() for m in _SUB_VAR.findall(text) if not m.startswith("!"))
                found |= {n.split(".", 1)[0] for n in names}
                if not isinstance(value, str):
                    found |= _references(value[1])
            else:
                found |= _references(value)
    return found


def deploy_order(resources: Mapping[str, Any]) -> list[str]:
    """Logical ids in dependency order (refs and DependsOn), template order between equals."""
    depends: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        explicit = resource.get("DependsOn", [])
        explicit = [explicit] if isinstance(explicit, str) else explicit
        depends[logical_id] = (_references(resource) | set(explicit)) & set(resources) - {logical_id}
    order: list[str] = []
    while len(order) < len(resources):
        ready = [r for r in resources if r not in order and depends[r] <= set(order)]
        if not ready:
            stuck = sorted(set(resources) - set(order))
            raise TemplateError(f"circular dependency between {stuck}")
        order.append(ready[0])
    return order


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    """Refuse a value CloudFormation would refuse (its constraints, checked on defaults too)."""

    def refuse(reason: str) -> TemplateError:
        hint = spec.get("ConstraintDescription")
        return TemplateError(f"parameter {name}={value!r} {reason}" + (f" ({hint})" if hint else ""))

    if "AllowedValues" in spec and value not in {str(v) for v in spec["AllowedValues"]}:
        raise refuse(f"is not one of {spec['AllowedValues']}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise refuse("is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise refuse(f"is below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise refuse(f"is above MaxValue {spec['MaxValue']}")
        return
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise refuse(f"is shorter than MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise refuse(f"is longer than MaxLength {spec['MaxLength']}")
    # CloudFormation matches the whole value (Java regex); the template's patterns mean the same in Python.
    if "AllowedPattern" in spec and re.fullmatch(str(spec["AllowedPattern"]), value) is None:
        raise refuse(f"does not match AllowedPattern {spec['AllowedPattern']}")


def resolve_parameters(
    template: Mapping[str, Any], overrides: Mapping[str, str], pseudo: Mapping[str, Any]
) -> dict[str, Any]:
    declared: Mapping[str, Any] = template.get("Parameters", {})
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameters {sorted(unknown)}")
    values: dict[str, Any] = dict(pseudo)
    for name, spec in declared.items():
        if name in overrides:
            value: Any = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name!r} has no default and no value was given")
        value = str(value)
        _check_parameter(name, spec, value)
        if spec.get("Type") in {"CommaDelimitedList", "List<String>"}:
            values[name] = [v.strip() for v in value.split(",")] if value else []
        else:
            values[name] = value
    return values
