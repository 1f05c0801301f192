"""Reading workflows from YAML with a location for every value, and writing them back.

Links and input references use YAML tags, so a plain string is always a literal:
``model: !link ckpt.model`` and ``seed: !input seed``.
"""

from __future__ import annotations

from typing import Any

import yaml

from sdflow.errors import Location, WorkflowError, WorkflowErrors, suggestion
from sdflow.graphs.model import INPUT_TYPES, NAME, InputRef, InputSpec, Link, NodeSpec, Workflow

LINK_TAG = "!link"
INPUT_TAG = "!input"
TOP_LEVEL = ("version", "inputs", "nodes")
INPUT_KEYS = ("type", "default", "description")


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves our two tags to us."""


def loads(text: str, file: str | None = None) -> Workflow:
    """Parse workflow YAML text (``file`` is only used in messages)."""
    return _Reader(text, file).read()


class _Reader:
    def __init__(self, text: str, file: str | None) -> None:
        self.text, self.file = text, file
        self.errors: list[WorkflowError] = []
        self.constructor = _Loader("")

    def read(self) -> Workflow:
        try:
            return self._read()
        except yaml.MarkedYAMLError as exc:  # also a bad '!!tag' met while building a value
            mark = exc.problem_mark or exc.context_mark
            raise WorkflowError(f"invalid YAML: {_problem(exc)}", self._at(mark)) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow, anywhere
            raise WorkflowError(
                f"invalid YAML: character {chr(exc.character)!r} (U+{exc.character:04X}) is not allowed "
                "in a YAML file (non-printable)",
                self._at_offset(exc.position),
            ) from None
        except yaml.YAMLError as exc:
            raise WorkflowError(f"invalid YAML: {exc}", Location(self.file)) from None
        except RecursionError:
            raise WorkflowError("invalid YAML: nested too deeply", Location(self.file)) from None

    def _read(self) -> Workflow:
        root = yaml.compose(self.text, Loader=_Loader)
        if not isinstance(root, yaml.MappingNode):
            raise WorkflowError(
                "a workflow is a mapping with 'version', 'inputs' and 'nodes'",
                self._at(root.start_mark if root else None),
            )
        workflow = Workflow(file=self.file, source=self.text)
        top = self._mapping(root, None)
        for key, (key_node, _value) in top.items():
            if key not in TOP_LEVEL:
                self._unknown(key, TOP_LEVEL, key_node, "top-level key")
        if "version" in top:
            workflow.version = self._version(top["version"][1])
        if "inputs" in top:
            workflow.inputs = self._inputs(top["inputs"][1])
        if "nodes" not in top:
            self.errors.append(WorkflowError("the workflow has no 'nodes'", self._at(root.start_mark)))
        else:
            workflow.nodes = self._nodes(top["nodes"][1])
        if self.errors:
            raise WorkflowErrors(self.errors)
        return workflow

    # -- helpers --------------------------------------------------------------------------------

    def _at(self, mark: Any, node: str | None = None, field: str | None = None) -> Location:
        if mark is None:
            return Location(self.file, node=node, field=field)
        return Location(self.file, mark.line + 1, mark.column + 1, node, field)

    def _at_offset(self, offset: int) -> Location:
        """The location of a character offset into the text."""
        before = self.text[:offset]
        line = before.count("\n") + 1
        return Location(self.file, line, offset - (before.rfind("\n") + 1) + 1)

    def _error(self, message: str, yaml_node: Any, node: str | None = None, field: str | None = None):
        self.errors.append(WorkflowError(message, self._at(yaml_node.start_mark, node, field)))

    def _unknown(self, name: str, valid: tuple[str, ...] | list[str], yaml_node: Any, what: str, node=None):
        suffix = suggestion(name, valid, f" (expected one of: {', '.join(valid)})")
        self._error(f"unknown {what} '{name}'{suffix}", yaml_node, node, name if node else None)

    def _mapping(self, yaml_node: Any, node: str | None) -> dict[str, tuple[Any, Any]]:
        """A YAML mapping as {key: (key node, value node)}; non-string and repeated keys are errors."""
        result: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in yaml_node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._error("keys must be plain names", key_node, node)
                continue
            key = key_node.value
            if key in result:
                self._error(f"'{key}' is given twice", key_node, node, key if node else None)
                continue
            result[key] = (key_node, value_node)
        return result

    def _value(self, yaml_node: Any) -> Any:
        return self.constructor.construct_object(yaml_node, deep=True)

    def _version(self, yaml_node: Any) -> int:
        value = self._value(yaml_node) if yaml_node.tag.startswith("tag:yaml.org") else None
        if value != 1:
            self._error(f"unsupported version {yaml_node.value!r}: this sdflow reads version 1", yaml_node)
        return 1

    # -- inputs ---------------------------------------------------------------------------------

    def _inputs(self, yaml_node: Any) -> dict[str, InputSpec]:
        if not isinstance(yaml_node, yaml.MappingNode):
            self._error("'inputs' must map input names to defaults or {type, default}", yaml_node)
            return {}
        inputs = {}
        for name, (key_node, value_node) in self._mapping(yaml_node, None).items():
            if not NAME.match(name):
                self._error(f"input name '{name}' must be letters, digits, '_' or '-'", key_node)
                continue
            spec = self._input(name, value_node)
            if spec is not None:
                inputs[name] = spec
        return inputs

    def _input(self, name: str, yaml_node: Any) -> InputSpec | None:
        loc = self._at(yaml_node.start_mark)
        if not isinstance(yaml_node, yaml.MappingNode):
            default = self._value(yaml_node)
            kind = _type_name(default)
            if kind is None:
                self._error(f"input '{name}': a default must be a number, string or boolean", yaml_node)
                return None
            return InputSpec(name, kind, default, False, "", loc)
        entries = self._mapping(yaml_node, None)
        for key, (key_node, _) in entries.items():
            if key not in INPUT_KEYS:
                self._unknown(key, INPUT_KEYS, key_node, f"key of input '{name}'")
        default = self._value(entries["default"][1]) if "default" in entries else None
        kind = self._value(entries["type"][1]) if "type" in entries else _type_name(default)
        if kind not in INPUT_TYPES:
            where = entries["type"][1] if "type" in entries else yaml_node
            self._error(f"input '{name}': type must be one of {', '.join(INPUT_TYPES)}", where)
            return None
        spec = InputSpec(name, kind, None, "default" not in entries, "", loc)
        spec.description = str(self._value(entries["description"][1])) if "description" in entries else ""
        if "default" in entries:
            try:
                spec.default = spec.check(default)
            except ValueError as exc:
                self._error(str(exc), entries["default"][1])
        return spec

    # -- nodes ----------------------------------------------------------------------------------

    def _nodes(self, yaml_node: Any) -> dict[str, NodeSpec]:
        if not isinstance(yaml_node, yaml.MappingNode):
            self._error("'nodes' must map node ids to {type: ..., fields...}", yaml_node)
            return {}
        nodes = {}
        for node_id, (key_node, value_node) in self._mapping(yaml_node, None).items():
            if not NAME.match(node_id):
                self._error(f"node id '{node_id}' must be letters, digits, '_' or '-'", key_node)
                continue
            if not isinstance(value_node, yaml.MappingNode):
                self._error("a node is a mapping with 'type:' and its fields", value_node, node_id)
                continue
            nodes[node_id] = self._node(node_id, key_node, value_node)
        return nodes

    def _node(self, node_id: str, key_node: Any, yaml_node: Any) -> NodeSpec:
        spec = NodeSpec(node_id, "", loc=self._at(key_node.start_mark, node_id))
        for name, (_field_key, value_node) in self._mapping(yaml_node, node_id).items():
            if name == "type":
                spec.field_locs["type"] = self._at(value_node.start_mark)
                if not isinstance(value_node, yaml.ScalarNode) or value_node.tag != "tag:yaml.org,2002:str":
                    self._error(
                        "'type' must be a node type name, e.g. type: EmptyLatent", value_node, node_id, name
                    )
                    spec.type = "?"
                    continue
                spec.type = value_node.value
                continue
            spec.field_locs[name] = self._at(value_node.start_mark)
            value = self._field(node_id, name, value_node)
            if value is not _INVALID:
                spec.fields[name] = value
        if not spec.type:
            self._error("the node has no 'type'", key_node, node_id)
        return spec

    def _field(self, node_id: str, name: str, yaml_node: Any) -> Any:
        if yaml_node.tag == LINK_TAG:
            return self._link(node_id, name, yaml_node)
        if yaml_node.tag == INPUT_TAG:
            ref = str(yaml_node.value) if isinstance(yaml_node, yaml.ScalarNode) else ""
            if not NAME.match(ref):
                self._error(f"'!input {ref}' needs an input name", yaml_node, node_id, name)
                return _INVALID
            return InputRef(ref)
        if yaml_node.tag.startswith("!"):
            self._error(
                f"unknown tag '{yaml_node.tag}' (use !link NODE.OUTPUT or !input NAME)",
                yaml_node,
                node_id,
                name,
            )
            return _INVALID
        try:
            return self._value(yaml_node)
        except yaml.YAMLError as exc:
            self._error(f"invalid value: {_problem(exc)}", yaml_node, node_id, name)
            return _INVALID

    def _link(self, node_id: str, name: str, yaml_node: Any) -> Any:
        text = str(yaml_node.value) if isinstance(yaml_node, yaml.ScalarNode) else ""
        target, _, output = text.partition(".")
        if not NAME.match(target) or (output and not NAME.match(output)):
            self._error(f"'!link {text}' must be NODE or NODE.OUTPUT", yaml_node, node_id, name)
            return _INVALID
        return Link(target, output or None)


_INVALID = object()
_STANDARD_TAG = "tag:yaml.org,2002:"


def _problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint in one line, without its own copy of the location."""
    problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
    if isinstance(exc, yaml.constructor.ConstructorError) and "for the tag" in problem:
        tag = problem.rsplit("tag ", 1)[-1].strip("'")
        tag = "!!" + tag[len(_STANDARD_TAG) :] if tag.startswith(_STANDARD_TAG) else tag
        return f"unsupported tag '{tag}' (a workflow holds plain values, !link NODE.OUTPUT and !input NAME)"
    return problem


def _type_name(value: Any) -> str | None:
    for name, kinds in INPUT_TYPES.items():
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, kinds):
            return name
    return None


# -- writing ------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes Links and InputRefs with our tags."""

    def ignore_aliases(self, data: Any) -> bool:
        """A link used twice is written twice, never as a YAML anchor and alias."""
        return True

    def choose_scalar_style(self) -> str:
        """Links and input names unquoted, as people write them: ``!link ckpt.clip``."""
        if self.event.tag in (LINK_TAG, INPUT_TAG):
            if self.analysis is None:
                self.analysis = self.analyze_scalar(self.event.value)
            if self.analysis.allow_block_plain and not self.analysis.empty:
                return ""
        return super().choose_scalar_style()


_Dumper.add_representer(Link, lambda d, v: d.represent_scalar(LINK_TAG, str(v)))
_Dumper.add_representer(InputRef, lambda d, v: d.represent_scalar(INPUT_TAG, v.name))


def dumps(workflow: Workflow) -> str:
    """The workflow as YAML that ``loads`` reads back to an equal workflow."""
    inputs = {}
    for name, spec in workflow.inputs.items():
        entry: dict[str, Any] = {"type": spec.type}
        if not spec.required:
            entry["default"] = spec.default
        if spec.description:
            entry["description"] = spec.description
        inputs[name] = entry
    nodes = {nid: {"type": spec.type, **spec.fields} for nid, spec in workflow.nodes.items()}
    document: dict[str, Any] = {"version": workflow.version}
    if inputs:
        document["inputs"] = inputs
    document["nodes"] = nodes
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
