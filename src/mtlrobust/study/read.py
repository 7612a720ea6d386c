"""Reading a study file strictly, validating it against the packaged schema and loading its plan;
every refusal is one line naming the file, line and key."""

from __future__ import annotations

import copy
import re
from importlib import resources

from .build import build
from .checks import StudyError, check_inputs
from .plan import Plan

# The schema ships inside the package (package data), so an installed mtlrobust validates studies anywhere.
SCHEMA = resources.files("mtlrobust").joinpath("schemas", "config.schema.yaml")

# ------------------------------------------------------------------------------------ loading
MAX_STUDY_BYTES = 1 << 20  # a study file is a few kB: anything larger is a mistake (or an attack)
MAX_DEPTH = 32  # the schema nests 5 levels; deeper is a mistake, and deep nesting exhausts recursion
MAX_NODES = 20000  # values and collections: the paper's study has ~700; more only costs seconds to parse


def read(path) -> tuple[dict, dict[str, int]]:
    """A study file's mapping and the line of each key (dotted), refused before any schema check where it
    cannot be a study: over MAX_STUDY_BYTES, not UTF-8, a YAML syntax error, an alias (a few lines of nested
    aliases expand to billions of values once validated or copied), nesting deeper than MAX_DEPTH, more than
    MAX_NODES values, a duplicate key (YAML keeps the last silently) or not a mapping. Each error is one line
    starting PATH:LINE."""
    import yaml

    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STUDY_BYTES + 1)
    except OSError as e:
        raise StudyError(f"{name}: cannot read the study file: {e.strerror}") from None
    if len(data) > MAX_STUDY_BYTES:
        raise StudyError(f"{name}: larger than {MAX_STUDY_BYTES} bytes (1 MiB); a study file is a few kB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise StudyError(
            f"{name}:{line}: byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8; save the study as "
            "UTF-8"
        ) from None
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lines: dict[str, int] = {}
    try:
        _check_events(yaml.parse(text, Loader=loader_class), name)
        loader = loader_class(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_keys(node, "", name, lines)
            config = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise StudyError(_yaml_error(name, text, e)) from None
    if config is None:  # an empty file, or comments only: every key takes its default
        config = {}
    if not isinstance(config, dict):
        raise StudyError(
            f"{name}: expected a mapping of config keys (dataset:, tasks:, ...) at the top, got a "
            f"{type(config).__name__}"
        )
    return config, lines


def _check_events(events, name: str) -> None:
    """No alias, no nesting deeper than MAX_DEPTH, at most MAX_NODES values: checked on the parser's events,
    before any node exists."""
    import yaml

    depth = nodes = 0
    for event in events:
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                m = event.start_mark
                raise StudyError(
                    f"{name}:{m.line + 1}:{m.column + 1}: more than {MAX_NODES} values; a study has a few "
                    "hundred"
                )
        if isinstance(event, yaml.AliasEvent):
            m = event.start_mark
            raise StudyError(
                f"{name}:{m.line + 1}:{m.column + 1}: YAML alias *{event.anchor} is not allowed in a study "
                "file (nested aliases expand exponentially); write the values out"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                m = event.start_mark
                raise StudyError(f"{name}:{m.line + 1}:{m.column + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_keys(node, path: str, name: str, lines: dict[str, int]) -> None:
    """Record the line of every key (``lines``, dotted) and refuse a key repeated in one mapping."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{path}.{key}" if path else str(key)
            m = key_node.start_mark
            if key in first:
                raise StudyError(
                    f"{name}:{m.line + 1}:{m.column + 1}: duplicate key {dotted} (first at line "
                    f"{first[key]}); YAML would silently keep only the last value"
                )
            first[key] = lines[dotted] = m.line + 1
            _check_keys(value, dotted, name, lines)
    elif isinstance(node, yaml.SequenceNode):
        for value in node.value:
            _check_keys(value, path, name, lines)


def _yaml_error(name: str, text: str, e) -> str:
    """A YAML error as one line: PATH:LINE:COLUMN: problem (context)."""
    import yaml

    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"{name}:{mark.line + 1}:{mark.column + 1}"
        problem = e.problem or "YAML error"
        context = getattr(e, "context", None)
        if context and e.context_mark is not None:
            problem += f" ({context} at line {e.context_mark.line + 1})"
        elif context:
            problem += f" ({context})"
    else:  # a reader error (a character YAML does not allow): its position is an index into the text
        position = getattr(e, "position", 0) or 0
        where = f"{name}:{text.count(chr(10), 0, position) + 1}"
        problem = getattr(e, "reason", None) or str(e)
    kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
    return f"{where}: {kind}: " + " ".join(str(problem).split())


def _schema(schema) -> dict:
    import yaml

    return yaml.load(schema.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validated(config: dict, schema=SCHEMA) -> dict:
    """``config`` checked against the schema, its defaults filled in (as Snakemake's ``validate``), with
    integers strictly: JSON Schema counts 4.0 as an integer, which a job's ``--batch-size 4.0`` then refuses
    after hours of training. The first error is one line naming the key."""
    from jsonschema import Draft202012Validator, exceptions, validators

    base = Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, props, instance, sub):
        if validator.is_type(instance, "object"):
            for key, prop in props.items():
                if "default" in prop:
                    instance.setdefault(key, copy.deepcopy(prop["default"]))
        yield from properties(validator, props, instance, sub)

    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    )
    validator = validators.extend(base, {"properties": with_defaults}, type_checker=strict)(_schema(schema))
    error = exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise StudyError(_schema_error(error))
    return config


def _schema_error(e) -> str:
    """A schema error as one line naming the key (an unknown key by its own name)."""
    key = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and e.validator_value is False and isinstance(e.instance, dict):
        known = e.schema.get("properties", {})
        extra = sorted((k for k in e.instance if k not in known), key=str)
        if extra:
            where = f"{key}.{extra[0]}" if key else str(extra[0])
            return f"config key {where}: unknown key; expected one of {sorted(known)}"
    message = " ".join(e.message.split())
    if len(message) > 300:
        message = message[:300] + " ..."
    return f"config key {key or '(top level)'}: {message}"


def _located(message: str, name: str, lines: dict[str, int]) -> str:
    """``message`` prefixed with ``PATH:LINE`` of the config key it names (or of its nearest parent key)."""
    m = re.match(r"config key ([^\s:]+)", message)
    key = m[1] if m else ""
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return f"{name}:{lines[key]}: {message}" if key else f"{name}: {message}"


def plan_of(config: dict, name: str, lines: dict[str, int], schema=SCHEMA) -> Plan:
    """Validate ``config`` in place, check its input files and build its plan; errors name PATH:LINE."""
    try:
        plan = build(validated(config, schema))
        check_inputs(config)
    except StudyError as e:
        raise StudyError(_located(str(e), name, lines)) from None
    return plan


def load(configfile, schema=SCHEMA) -> Plan:
    """The plan of a study file: ``read``, schema validation with defaults, ``build`` and ``check_inputs``."""
    config, lines = read(configfile)
    return plan_of(config, str(configfile), lines, schema)


def load_workflow(config: dict, configfiles, schema=SCHEMA) -> Plan:
    """The workflow's plan of the config Snakemake merged (``--config`` values included), after every study
    file it was given is read again with ``read``: Snakemake's own YAML loading accepts aliases and duplicate
    keys and reads files of any size, so the same checks as ``mtlrobust plan`` run before the schema's."""
    name, lines = "config", {}
    for path in configfiles:
        name, lines = str(path), read(path)[1]
    return plan_of(config, name, lines, schema)
