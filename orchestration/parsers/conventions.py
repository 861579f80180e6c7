"""Span attributes to observation columns, for every tracing convention tracehouse reads.

``FIELDS`` is the whole mapping, one table: for each column, the rules that can fill it, in precedence
order. A rule names its convention, the attribute keys it reads (a key ending in ``.`` takes every key under
that prefix), how it reads them, and when it applies. For a "first" field the first rule that applies and
gives a value wins; for a "merge" field every rule contributes (later rules do not overwrite earlier keys).
Once a field has its value, every key its rules list is claimed: kept out of ``metadata``, because the
column holds it (and the alternatives are the same fact in another convention's words). Anything no field
claims stays in ``metadata`` under its own key.

A value that is present but cannot be read (nested where a number belongs, a wrong type, JSON that does not
parse) raises :class:`FieldError` in its reader: the attribute stays in ``metadata`` exactly as it came, the
problem is listed on the row (``tracehouse.unmapped``) and counted on the load, and the next rule is tried.
One bad value never costs its span, let alone its batch.

Precedence where conventions overlap on one span: Langfuse's own attributes, then the OTel GenAI
conventions, then OpenInference, OpenLLMetry (Traceloop), the Vercel AI SDK and Logfire/pydantic-ai, each
field's list says exactly. docs/conventions.md explains the choices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestration.parsers.common import BadObject, iso_to_us, json_text, string_map, tag_list

UNMAPPED_KEY = "tracehouse.unmapped"


class FieldError(ValueError):
    """A value present but not mappable; ``str(exc)`` says why."""


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What rules may look at besides the attributes they read."""

    attributes: dict[str, Any]
    scope: str
    is_root: bool
    start_us: int | None


@dataclass(frozen=True, slots=True)
class Rule:
    convention: str
    keys: tuple[str, ...]
    read: Callable[[dict[str, Any], SpanFacts], Any]  # the present keys' values -> the field's value
    when: Callable[[SpanFacts], bool] | None = None
    exclude: tuple[str, ...] = ()  # keys under a prefix this rule leaves to other fields
    claim: bool = True  # False: the key says more than the column holds (an operation name), it stays


@dataclass(frozen=True, slots=True)
class Field:
    rules: tuple[Rule, ...]
    merge: bool = False


@dataclass(slots=True)
class Mapped:
    values: dict[str, Any] = field(default_factory=dict)
    rest: dict[str, Any] = field(default_factory=dict)  # attributes no field claimed
    problems: list[str] = field(default_factory=list)


# --- readers: raw attribute value -> column value, or FieldError ------------------------------------


def _loads(value: Any, what: str = "value") -> Any:
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise FieldError(f"{what} is not valid JSON: {value[:48]!r}") from None


def text(value: Any) -> str:
    """Ids and names: strings as they are, anything else as JSON text."""
    return value if isinstance(value, str) else json_text(value)


def payload(value: Any) -> str:
    """Inputs, outputs, parameters: JSON text; a string is kept as sent (it may be JSON already)."""
    return value if isinstance(value, str) else json_text(value)


def unquoted(value: Any) -> Any:
    """Langfuse SDKs JSON-encode metadata values: ``'"weather"'`` is the string ``weather``."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def count(value: Any, what: str = "token count") -> int:
    """A token count: a non-negative integer, as a number or a decimal string."""
    if isinstance(value, bool):
        raise FieldError(f"{what} is a boolean: {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(f"{what} is not a number: {value[:32]!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0 or value >= 2**63:
        raise FieldError(f"{what} must be a finite non-negative number, got {str(value)[:32]!r}")
    return int(value)


def amount(value: Any) -> float:
    """A cost in USD."""
    if isinstance(value, bool):
        raise FieldError(f"cost is a boolean: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FieldError(f"cost is not a number: {str(value)[:32]!r}") from None
    if not math.isfinite(number):
        raise FieldError("cost must be a finite number")
    return number


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FieldError(f"not an integer: {str(value)[:32]!r}")
    try:
        number = int(value)
    except ValueError:
        raise FieldError(f"not an integer: {value[:32]!r}") from None
    if not 0 <= number <= 4_294_967_295:
        raise FieldError(f"out of range: {number}")
    return number


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise FieldError(f"not a boolean: {str(value)[:32]!r}")


def timestamp(value: Any) -> int:
    try:
        return iso_to_us(unquoted(value), "timestamp")
    except BadObject as exc:
        raise FieldError(str(exc)) from None


def _tags(value: Any) -> list[str]:
    return tag_list(value, "tags")


def _metadata(value: Any) -> dict[str, str]:
    return string_map(value, "metadata")


def texts(found: dict[str, Any]) -> dict[str, str]:
    return {k: text(v) for k, v in found.items()}


def unquoted_texts(found: dict[str, Any]) -> dict[str, str]:
    return {k: text(unquoted(v)) for k, v in found.items()}


def cost_object(value: Any) -> dict[str, float]:
    value = _loads(value, "cost")
    if not isinstance(value, dict):
        raise FieldError("cost must be an object of numbers")
    return {str(k): amount(v) for k, v in value.items() if v is not None}


# --- usage: one naming whatever the convention ------------------------------------------------------
# input / output / total, plus input_<detail> and output_<detail> (input_cached_tokens,
# output_reasoning_tokens, ...). Counts that arrive inclusive (OpenAI usage objects and every convention's
# token attributes: prompt tokens include the cached ones) have their details subtracted from input and
# output, so the keys other than total add up to total: the naming and arithmetic Langfuse uses, so a
# dashboard priced per key counts each token once. A flat object already in this naming is kept as sent.

_OPENAI_SHAPES = (
    ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"),
    ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"),  # Responses API
)


def normalise_usage(counts: dict[str, int]) -> dict[str, int]:
    """Inclusive counts to the documented naming: details subtracted from input/output, total kept."""
    out = dict(counts)
    for side in ("input", "output"):
        details = sum(v for k, v in out.items() if k.startswith(side + "_"))
        if side in out:
            out[side] = max(out[side] - details, 0)
    if out and "total" not in out:
        out["total"] = sum(v for k, v in out.items())
    return out


def usage_object(value: Any) -> dict[str, int]:
    """A usage object: OpenAI's (chat or Responses API, with nested details) or a flat map of counts."""
    value = _loads(value, "usage")
    if not isinstance(value, dict):
        raise FieldError("usage must be an object of token counts")
    for inp, outp, inp_details, outp_details in _OPENAI_SHAPES:
        if inp in value or outp in value:
            counts = {"input": value.get(inp), "output": value.get(outp), "total": value.get("total_tokens")}
            names = {"input": inp, "output": outp, "total": "total_tokens"}
            counts = {k: count(v, names[k]) for k, v in counts.items() if v is not None}
            for side, key in (("input", inp_details), ("output", outp_details)):
                nested = value.get(key) or {}
                if not isinstance(nested, dict):
                    raise FieldError(f"usage {key} must be an object")
                counts.update(
                    {f"{side}_{k}": count(v, f"{key}.{k}") for k, v in nested.items() if v is not None}
                )
            known = {inp, outp, "total_tokens", inp_details, outp_details}
            extra = {k: v for k, v in value.items() if k not in known and v is not None}
            counts.update({k: count(v, k) for k, v in extra.items()})
            return normalise_usage(counts)
    flat = {str(k): count(v, str(k)) for k, v in value.items() if v is not None and k != "unit"}
    if flat and "total" not in flat:
        flat["total"] = sum(flat.values())
    return flat


def _token_keys(names: dict[str, tuple[str, ...]]) -> Callable[[dict[str, Any], SpanFacts], dict[str, int]]:
    """Usage from one count per attribute; ``names`` lists, per usage key, the attributes in preference."""

    def read(found: dict[str, Any], facts: SpanFacts) -> dict[str, int]:
        counts = {}
        for name, keys in names.items():
            key = next((k for k in keys if found.get(k) not in (None, "")), None)
            if key is not None:
                counts[name] = count(found[key], key)
        return normalise_usage(counts) if counts else {}

    return read


# --- messages flattened into attributes (OpenInference, OpenLLMetry's legacy prompt/completion) -----

_INDEX = re.compile(r"^\d+$")


def _nest(flat: dict[str, Any]) -> Any:
    """``{"0.message.role": "user", "0.message.content": "hi"}`` -> ``[{"message": {...}}]``."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FieldError(f"{path} conflicts with a value at its parent")
        node[parts[-1]] = value

    def lists(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node and all(_INDEX.match(k) for k in node):
            return [lists(node[k]) for k in sorted(node, key=int)]
        return {k: lists(v) for k, v in node.items()}

    return lists(tree)


def flattened_messages(convention: str, prefix: str, wrapper: str | None) -> Rule:
    """Messages flattened one attribute per leaf (``llm.input_messages.0.message.role``) as a JSON list."""

    def read(found: dict[str, Any], facts: SpanFacts) -> str:
        messages = _nest({k[len(prefix) :]: v for k, v in found.items()})
        if not isinstance(messages, list):
            raise FieldError(f"{prefix}* is not an indexed list")
        if wrapper:
            messages = [m.get(wrapper, m) if isinstance(m, dict) else m for m in messages]
        return json_text(_unwrap_calls(messages))

    return Rule(convention, (prefix,), read)


def _unwrap_calls(messages: list) -> list:
    """OpenInference nests each tool call under ``tool_call``; lift it so calls read like OpenAI's."""
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("tool_calls"), list):
            m["tool_calls"] = [c.get("tool_call", c) if isinstance(c, dict) else c for c in m["tool_calls"]]
    return messages


# --- rule helpers -------------------------------------------------------------------------------------


def one(convention: str, key: str, read: Callable[[Any], Any] = text, when=None) -> Rule:
    return Rule(convention, (key,), lambda found, facts: read(found[key]), when)


def group(convention: str, prefix: str, read: Callable[[dict[str, Any]], Any], when=None, exclude=()) -> Rule:
    """Every attribute under ``prefix``, passed on with the prefix cut off."""
    return Rule(
        convention,
        (prefix,),
        lambda found, facts: read({k[len(prefix) :]: v for k, v in found.items()}),
        when,
        tuple(prefix + e for e in exclude),
    )


def several(convention: str, keys: Iterable[str], read, when=None) -> Rule:
    return Rule(convention, tuple(keys), read, when)


def mapped(convention: str, key: str, table: dict[str, str], strict: bool = False, claim=True) -> Rule:
    """An enum attribute through a lookup table; a value not in it gives nothing (``strict``: a problem)."""

    def read(value: Any) -> str | None:
        found = table.get(str(value).lower()) if isinstance(value, str) else None
        if found is None and strict:
            raise FieldError(f"unknown value {str(value)[:32]!r}")
        return found

    return Rule(convention, (key,), lambda found, facts: read(found[key]), claim=claim)


def _root(facts: SpanFacts) -> bool:
    return facts.is_root


# Spans that report the sum of their children's usage: counting them too would double every total. Their
# own totals stay in metadata under their attribute keys.
VERCEL_WRAPPERS = {
    "ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject", "ai.embed", "ai.embedMany",
}  # fmt: skip


def is_wrapper(facts: SpanFacts) -> bool:
    a = facts.attributes
    if a.get("ai.operationId") in VERCEL_WRAPPERS:
        return True
    return facts.scope == "pydantic-ai" and a.get("gen_ai.operation.name") == "invoke_agent"


def _not_wrapper(facts: SpanFacts) -> bool:
    return not is_wrapper(facts)


def _vercel_call(facts: SpanFacts) -> bool:
    return facts.scope == "ai" and not is_wrapper(facts)


def _vercel_embedding(facts: SpanFacts) -> bool:
    """Vercel's embedding calls report their (input) tokens as ``ai.usage.tokens``."""
    return facts.attributes.get("ai.operationId") in ("ai.embed.doEmbed", "ai.embedMany.doEmbed")


# --- the table ---------------------------------------------------------------------------------------

OBSERVATION_TYPES = {
    t.lower(): t
    for t in ("SPAN", "GENERATION", "EVENT", "EMBEDDING", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "GUARDRAIL",
              "EVALUATOR")
}  # fmt: skip
OPENINFERENCE_KINDS = {
    "llm": "GENERATION", "embedding": "EMBEDDING", "chain": "CHAIN", "retriever": "RETRIEVER",
    "reranker": "RETRIEVER", "tool": "TOOL", "agent": "AGENT", "guardrail": "GUARDRAIL",
    "evaluator": "EVALUATOR",
}  # fmt: skip
TRACELOOP_KINDS = {"workflow": "CHAIN", "task": "SPAN", "agent": "AGENT", "tool": "TOOL"}
GENAI_OPERATIONS = {
    "chat": "GENERATION", "text_completion": "GENERATION", "completion": "GENERATION",
    "generate_content": "GENERATION", "generate": "GENERATION", "embeddings": "EMBEDDING",
    "execute_tool": "TOOL", "invoke_agent": "AGENT", "create_agent": "AGENT", "invoke_workflow": "CHAIN",
}  # fmt: skip
VERCEL_OPERATIONS = {
    "ai.generatetext.dogenerate": "GENERATION", "ai.streamtext.dostream": "GENERATION",
    "ai.generateobject.dogenerate": "GENERATION", "ai.streamobject.dostream": "GENERATION",
    "ai.embed.doembed": "EMBEDDING", "ai.embedmany.doembed": "EMBEDDING", "ai.toolcall": "TOOL",
    **{op.lower(): "SPAN" for op in VERCEL_WRAPPERS},
}  # fmt: skip
TRACELOOP_IDS = ("user_id", "session_id")
LEVELS = {"debug": "DEBUG", "default": "DEFAULT", "warning": "WARNING", "error": "ERROR"}

GENAI_USAGE = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "total": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    "input_cached_tokens": (
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.details.cache_read_tokens",
    ),
    "input_cache_creation": (
        "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
    ),
    "output_reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.details.reasoning_tokens",
    ),
}  # fmt: skip
OPENINFERENCE_USAGE = {
    "input": ("llm.token_count.prompt",),
    "output": ("llm.token_count.completion",),
    "total": ("llm.token_count.total",),
    "input_cached_tokens": ("llm.token_count.prompt_details.cache_read",),
    "input_cache_creation": ("llm.token_count.prompt_details.cache_write",),
    "input_audio_tokens": ("llm.token_count.prompt_details.audio",),
    "output_reasoning_tokens": ("llm.token_count.completion_details.reasoning",),
    "output_audio_tokens": ("llm.token_count.completion_details.audio",),
}
VERCEL_USAGE = {
    "input": ("ai.usage.inputTokens", "ai.usage.promptTokens"),
    "output": ("ai.usage.outputTokens", "ai.usage.completionTokens"),
    "total": ("ai.usage.totalTokens", "ai.usage.tokens"),
    "input_cached_tokens": ("ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens"),
    "input_cache_creation": ("ai.usage.inputTokenDetails.cacheWriteTokens",),
    "output_reasoning_tokens": ("ai.usage.outputTokenDetails.reasoningTokens", "ai.usage.reasoningTokens"),
}


def _usage_rule(convention: str, names: dict[str, tuple[str, ...]], when) -> Rule:
    return several(convention, [k for keys in names.values() for k in keys], _token_keys(names), when)


def _genai_input(found: dict[str, Any], facts: SpanFacts) -> str:
    """GenAI messages, with the system instructions (kept apart by the convention) as the first message."""
    messages = _loads(found.get("gen_ai.input.messages", "[]"), "gen_ai.input.messages")
    if "gen_ai.system_instructions" in found:
        system = _loads(found["gen_ai.system_instructions"], "gen_ai.system_instructions")
        if not isinstance(messages, list):
            raise FieldError("gen_ai.input.messages must be a list")
        messages = [{"role": "system", "parts": system}, *messages]
    return json_text(messages)


def _vercel_output(found: dict[str, Any], facts: SpanFacts) -> str:
    """Vercel's text and tool calls of one response, as one assistant message when both are there."""
    text_out, calls = found.get("ai.response.text"), found.get("ai.response.toolCalls")
    if text_out and calls:
        return json_text({"role": "assistant", "content": text_out, "tool_calls": _loads(calls, "toolCalls")})
    return payload(text_out or calls)


def _first_chunk(found: dict[str, Any], facts: SpanFacts) -> int | None:
    """Vercel reports the time to the first chunk in milliseconds after the span's start."""
    if facts.start_us is None:
        return None
    return facts.start_us + round(amount(found["ai.response.msToFirstChunk"]) * 1000)


def _logfire_level(value: Any) -> str:
    number = integer(value)
    return "ERROR" if number >= 17 else "WARNING" if number >= 13 else "DEBUG" if number < 9 else "DEFAULT"


def _params(value: dict[str, Any]) -> str | None:
    return json_text(value) if value else None


FIELDS: dict[str, Field] = {
    "type": Field(
        (
            mapped("langfuse", "langfuse.observation.type", OBSERVATION_TYPES, strict=True),
            mapped("openinference", "openinference.span.kind", OPENINFERENCE_KINDS),
            mapped("openllmetry", "traceloop.span.kind", TRACELOOP_KINDS),
            mapped("genai", "gen_ai.operation.name", GENAI_OPERATIONS, claim=False),
            mapped("vercel", "ai.operationId", VERCEL_OPERATIONS, claim=False),
            Rule("genai", ("gen_ai.tool.name",), lambda found, facts: "TOOL", claim=False),
        )
    ),
    "model": Field(
        (
            one("langfuse", "langfuse.observation.model.name"),
            one("genai", "gen_ai.response.model"),
            one("vercel", "ai.response.model"),
            one("openinference", "llm.model_name"),
            one("openinference", "embedding.model_name"),
            one("vercel", "ai.model.id"),
            one("genai", "gen_ai.request.model"),
        )
    ),
    "usage": Field(
        (
            one("langfuse", "langfuse.observation.usage_details", usage_object),
            _usage_rule("vercel", {"input": ("ai.usage.tokens",)}, _vercel_embedding),
            _usage_rule("vercel", VERCEL_USAGE, _vercel_call),
            _usage_rule("genai", GENAI_USAGE, _not_wrapper),
            _usage_rule("openinference", OPENINFERENCE_USAGE, _not_wrapper),
        )
    ),
    "cost": Field(
        (
            one("langfuse", "langfuse.observation.cost_details", cost_object),
            one("genai", "gen_ai.usage.cost", lambda v: {"total": amount(v)}, _not_wrapper),
            one("logfire", "operation.cost", lambda v: {"total": amount(v)}, _not_wrapper),
            several(
                "openinference",
                ["llm.cost.prompt", "llm.cost.completion", "llm.cost.total"],
                lambda found, facts: {
                    name: amount(found[key])
                    for name, key in (
                        ("input", "llm.cost.prompt"),
                        ("output", "llm.cost.completion"),
                        ("total", "llm.cost.total"),
                    )
                    if key in found
                },
                _not_wrapper,
            ),
        )
    ),  # fmt: skip
    "input": Field(
        (
            one("langfuse", "langfuse.observation.input", payload),
            several("genai", ["gen_ai.input.messages", "gen_ai.system_instructions"], _genai_input),
            flattened_messages("openinference", "llm.input_messages.", "message"),
            flattened_messages("openllmetry", "gen_ai.prompt.", None),
            one("vercel", "ai.prompt.messages", payload),
            one("vercel", "ai.prompt", payload),
            one("vercel", "ai.values", payload),
            one("vercel", "ai.value", payload),
            one("vercel", "ai.toolCall.args", payload),
            one("vercel", "ai.toolCall.input", payload),
            one("openllmetry", "traceloop.entity.input", payload),
            one("pydantic-ai", "pydantic_ai.all_messages", payload),
            one("genai", "gen_ai.tool.call.arguments", payload),
            one("pydantic-ai", "tool_arguments", payload),
            one("openinference", "input.value", payload),
            one("openllmetry", "gen_ai.prompt", payload),
        )
    ),
    "output": Field(
        (
            one("langfuse", "langfuse.observation.output", payload),
            one("genai", "gen_ai.output.messages", payload),
            flattened_messages("openinference", "llm.output_messages.", "message"),
            flattened_messages("openllmetry", "gen_ai.completion.", None),
            several("vercel", ["ai.response.text", "ai.response.toolCalls"], _vercel_output),
            one("vercel", "ai.response.object", payload),
            one("vercel", "ai.toolCall.result", payload),
            one("vercel", "ai.toolCall.output", payload),
            one("openllmetry", "traceloop.entity.output", payload),
            one("pydantic-ai", "final_result", payload),
            one("genai", "gen_ai.tool.call.result", payload),
            one("pydantic-ai", "tool_response", payload),
            one("openinference", "output.value", payload),
            one("openllmetry", "gen_ai.completion", payload),
        )
    ),
    "model_parameters": Field(
        (
            one("langfuse", "langfuse.observation.model.parameters", payload),
            one("openinference", "llm.invocation_parameters", payload),
            one("openinference", "embedding.invocation_parameters", payload),
            group("vercel", "ai.settings.", _params, lambda facts: facts.scope == "ai"),
            group("genai", "gen_ai.request.", _params, exclude=("model",)),
        )
    ),
    "level": Field(
        (
            mapped("langfuse", "langfuse.observation.level", LEVELS, strict=True),
            one("logfire", "logfire.level_num", _logfire_level),
        )
    ),
    "status_message": Field((one("langfuse", "langfuse.observation.status_message"),)),
    "completion_start_time": Field(
        (
            one("langfuse", "langfuse.observation.completion_start_time", timestamp),
            several("vercel", ["ai.response.msToFirstChunk"], _first_chunk),
        )
    ),
    "prompt_name": Field((one("langfuse", "langfuse.observation.prompt.name"),)),
    "prompt_version": Field((one("langfuse", "langfuse.observation.prompt.version", integer),)),
    "version": Field((one("langfuse", "langfuse.version"),)),
    "release": Field((one("langfuse", "langfuse.release"),)),
    "environment": Field(
        (
            one("langfuse", "langfuse.environment"),
            one("otel", "deployment.environment.name"),
            one("otel", "deployment.environment"),
        )
    ),
    "public": Field((one("langfuse", "langfuse.trace.public", boolean),)),
    # trace-level attributes, carried on any span of the trace
    "trace_name": Field(
        (
            one("langfuse", "langfuse.trace.name"),
            one("openllmetry", "traceloop.workflow.name"),
            one("vercel", "ai.telemetry.functionId", when=_root),
            one("genai", "gen_ai.agent.name", when=_root),  # an agent invoked at the root names its trace
        )
    ),
    "user_id": Field(
        (
            one("langfuse", "langfuse.user.id"),
            one("otel", "user.id"),
            one("openllmetry", "traceloop.association.properties.user_id"),
            one("vercel", "ai.telemetry.metadata.userId"),
            one("logfire", "user_id"),  # Logfire baggage (logfire.set_baggage(user_id=...))
        )
    ),
    "session_id": Field(
        (
            one("langfuse", "langfuse.session.id"),
            one("otel", "session.id"),
            one("openllmetry", "traceloop.association.properties.session_id"),
            one("vercel", "ai.telemetry.metadata.sessionId"),
            one("logfire", "session_id"),
            one("genai", "gen_ai.conversation.id"),
        )
    ),
    "tags": Field(
        (
            one("langfuse", "langfuse.trace.tags", _tags),
            one("openinference", "tag.tags", _tags),
            one("vercel", "ai.telemetry.metadata.tags", _tags),
            one("logfire", "logfire.tags", _tags),
        )
    ),
    "trace_metadata": Field(
        (
            group("langfuse", "langfuse.trace.metadata.", unquoted_texts),
            one("langfuse", "langfuse.trace.metadata", _metadata),
            one("openinference", "metadata", _metadata),
            group("openllmetry", "traceloop.association.properties.", texts, exclude=TRACELOOP_IDS),
            group("vercel", "ai.telemetry.metadata.", texts, exclude=("userId", "sessionId", "tags")),
        ),
        merge=True,
    ),  # fmt: skip
    "observation_metadata": Field(
        (
            group("langfuse", "langfuse.observation.metadata.", unquoted_texts),
            one("langfuse", "langfuse.observation.metadata", _metadata),
        ),
        merge=True,
    ),  # fmt: skip
}


# The table compiled for speed (a span carries a few conventions' keys, not all of them): for each attribute
# key, and each prefix by its first dotted segment, the (field, rule) pairs it can feed; a span evaluates
# only the rules its keys hit, in the table's order.
_HITS: dict[str, list[tuple[int, int]]] = {}
_PREFIXES_BY_HEAD: dict[str, list[str]] = {}
for _f, _spec in enumerate(FIELDS.values()):
    for _r, _rule in enumerate(_spec.rules):
        for _key in _rule.keys:
            _HITS.setdefault(_key, []).append((_f, _r))
            if _key.endswith(".") and _key not in _PREFIXES_BY_HEAD.setdefault(_key.split(".")[0], []):
                _PREFIXES_BY_HEAD[_key.split(".")[0]].append(_key)
_FIELD_LIST = list(FIELDS.items())


def _present(rule: Rule, attributes: dict[str, Any], by_prefix: dict[str, list[str]]) -> dict[str, Any]:
    found = {}
    for key in rule.keys:
        if key.endswith("."):
            for k in by_prefix.get(key, ()):
                if k not in rule.exclude:
                    found[k] = attributes[k]
        elif attributes.get(key) not in (None, ""):
            found[key] = attributes[key]
    return found


def map_attributes(facts: SpanFacts) -> Mapped:
    """Every field's value from the span's attributes; what no field claimed stays in ``rest``."""
    attributes = facts.attributes
    by_prefix: dict[str, list[str]] = {}
    hits: list[tuple[int, int]] = []
    for key in attributes:
        hits += _HITS.get(key, ())
        for prefix in _PREFIXES_BY_HEAD.get(key.partition(".")[0], ()):
            if key.startswith(prefix):
                if prefix not in by_prefix:
                    by_prefix[prefix] = []
                    hits += _HITS[prefix]
                by_prefix[prefix].append(key)
    hits.sort()
    out = Mapped()
    claimed: set[str] = set()
    i, n = 0, len(hits)
    while i < n:  # one field at a time, its hit rules in precedence order
        f = hits[i][0]
        rules = []
        while i < n and hits[i][0] == f:
            if not rules or rules[-1] != hits[i][1]:
                rules.append(hits[i][1])
            i += 1
        name, spec = _FIELD_LIST[f]
        present = [(spec.rules[r], _present(spec.rules[r], attributes, by_prefix)) for r in rules]
        _evaluate(name, spec, present, facts, out, claimed)
    out.rest = {k: v for k, v in attributes.items() if k not in claimed}
    return out


def _evaluate(name: str, spec: Field, present: list, facts: SpanFacts, out: Mapped, claimed: set) -> None:
    """One field: the first rule that gives a value wins (a merge field takes them all)."""
    merged: dict[str, Any] = {}
    failed: set[str] = set()
    for rule, found in present:
        if not found or (rule.when is not None and not rule.when(facts)):
            continue
        try:
            value = rule.read(found, facts)
        except (FieldError, BadObject) as exc:  # a shared reader's BadObject is a field's problem here
            out.problems.append(f"{', '.join(sorted(found))[:120]}: {exc}")
            failed.update(found)
            continue
        if value is None or value == "" or value == {} or value == []:
            continue
        if not spec.merge:
            out.values[name] = value
            for alternative, seen in present:  # the alternatives say the same thing: claimed with the winner
                if alternative.claim and seen:
                    claimed.update(seen.keys() - failed)
            return
        merged.update({k: v for k, v in value.items() if k not in merged})
        claimed.update(found)
    if spec.merge:
        out.values[name] = merged
