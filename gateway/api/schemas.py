"""JSON schemas of request and response bodies, for the route table's OpenAPI document.

Documentation of what the endpoints read and answer; the endpoints check their bodies themselves (with
messages that name the field), so these schemas stay loose where the endpoints accept more.
"""

from __future__ import annotations

from typing import Any

from gateway.api.routing import Content, JsonSchema

STRING: JsonSchema = {"type": "string"}
NULLABLE_STRING: JsonSchema = {"type": ["string", "null"]}
INTEGER: JsonSchema = {"type": "integer"}
OBJECT: JsonSchema = {"type": "object"}
TAGS: JsonSchema = {"type": "object", "additionalProperties": {"type": "string"}}
# Tags as an object, or MLflow's list of {"key", "value"} objects.
TAGS_IN: JsonSchema = {
    "oneOf": [
        TAGS,
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "value"],
                "properties": {"key": STRING, "value": STRING},
            },
        },
    ]
}

MLFLOW_ERROR: JsonSchema = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": STRING, "message": STRING},
}
OPENAI_ERROR: JsonSchema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {"message": STRING, "type": STRING, "code": NULLABLE_STRING},
        }
    },
}


ANTHROPIC_ERROR: JsonSchema = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"], "properties": {"type": STRING, "message": STRING}},
    },
}


def json_body(schema: JsonSchema) -> Content:
    return {"application/json": {"schema": schema}}


def obj(required: tuple[str, ...] = (), **properties: Any) -> JsonSchema:
    """An object schema with these properties (others allowed)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


# -- scoring (the MLflow scoring protocol) -------------------------------------------------------------

SCORING_REQUEST: Content = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs; optional params.",
            "properties": {
                "dataframe_split": obj(
                    columns={"type": "array", "items": STRING}, data={"type": "array"}, index={"type": "array"}
                ),
                "dataframe_records": {"type": "array", "items": OBJECT},
                "instances": {},
                "inputs": {},
                "params": OBJECT,
            },
        }
    },
    "text/csv": {"schema": STRING},
}
PREDICTIONS: Content = json_body(
    {"description": '{"predictions": ...}, or the object a model answered with itself; headers X-Model-Name, '
     "X-Model-Version"}
)  # fmt: skip
SCORING_ERRORS = {
    400: "Malformed body (or nested deeper than http.max_json_depth), schema mismatch, bad params, bad "
    "X-Request-Timeout-Ms header, or the model raised",
    404: "Unknown model, version or alias",
    413: "Body larger than serving.max_body_bytes, or more rows than serving.max_rows",
    415: "Unsupported content type or charset",
    503: "The model failed to load, or its queue is full (Retry-After)",
    504: "DEADLINE_EXCEEDED: the deadline (serving.request_timeout_s or X-Request-Timeout-Ms) passed while queued",
}

# -- operations -----------------------------------------------------------------------------------------

HEALTH: Content = json_body(
    obj(
        ("status", "models", "loaded"),
        status={"enum": ["ok", "unavailable"]},
        models={"type": "array", "items": STRING},
        loaded={"type": "array", "items": STRING},
        loading={"type": "array"},
        errors=OBJECT,
        failed_versions=OBJECT,
        store_error=STRING,
        registry_error=STRING,
    )
)
VERSION: Content = json_body(obj(("version",), version=STRING, python=STRING, onnxruntime=STRING, numpy=STRING))
LOADED_MODELS: Content = json_body(
    obj(
        ("models",),
        default_model=NULLABLE_STRING,
        models={"type": "array", "items": OBJECT},
        loading={"type": "array"},
        failed=OBJECT,
        registry_revision=INTEGER,
    )
)
PROMETHEUS_TEXT: Content = {"text/plain": {"schema": STRING}}
OPENAPI: Content = json_body(obj(("openapi", "paths"), openapi=STRING, paths=OBJECT))

# -- the model registry ---------------------------------------------------------------------------------

REGISTERED_MODEL = obj(
    ("name",),
    name=STRING,
    description=NULLABLE_STRING,
    tags=TAGS,
    created_at=INTEGER,
    updated_at=INTEGER,
    aliases={"type": "object", "additionalProperties": INTEGER},
    latest_version={"type": ["integer", "null"]},
)
MODEL_VERSION = obj(
    ("name", "version"),
    name=STRING,
    version=INTEGER,
    source=STRING,
    flavor=STRING,
    signature={"type": ["object", "null"]},
    tags=TAGS,
    description=NULLABLE_STRING,
    created_at=INTEGER,
    aliases={"type": "array", "items": STRING},
)
CREATE_MODEL: Content = json_body(obj(("name",), name=STRING, description=NULLABLE_STRING, tags=TAGS_IN))
CREATE_VERSION: Content = json_body(
    obj(("source",), source={**STRING, "description": "Path or file:// URI of a model package under an artifact root"},
        description=NULLABLE_STRING, tags=TAGS_IN)
)  # fmt: skip
SET_ALIAS: Content = json_body(obj(("version",), version={"type": ["integer", "string"]}))
ALIAS: Content = json_body(obj(("name", "alias", "version"), name=STRING, alias=STRING, version=INTEGER))

# -- MLflow's model-registry REST API (gateway/api/mlflow_registry.py) -----------------------------------

_MLFLOW_TAGS: JsonSchema = {"type": "array", "items": obj(("key",), key=STRING, value=STRING)}
_MLFLOW_VERSION_NUMBER: JsonSchema = {"type": ["string", "integer"], "description": "A version (MLflow: a string)"}
MLFLOW_MODEL_VERSION = obj(
    ("name", "version"),
    name=STRING,
    version={**STRING, "description": "The version number, as a string"},
    creation_timestamp=INTEGER,
    last_updated_timestamp=INTEGER,
    current_stage=STRING,
    description=STRING,
    source=STRING,
    run_id=STRING,
    status={"enum": ["READY"]},
    run_link=STRING,
    tags=_MLFLOW_TAGS,
    aliases={"type": "array", "items": STRING},
)
MLFLOW_REGISTERED_MODEL = obj(
    ("name",),
    name=STRING,
    creation_timestamp=INTEGER,
    last_updated_timestamp=INTEGER,
    description=STRING,
    latest_versions={"type": "array", "items": MLFLOW_MODEL_VERSION},
    tags=_MLFLOW_TAGS,
    aliases={"type": "array", "items": obj(("alias", "version"), alias=STRING, version=STRING)},
)
MLFLOW_EMPTY: Content = json_body({"type": "object", "maxProperties": 0})
MLFLOW_RM: Content = json_body(obj(("registered_model",), registered_model=MLFLOW_REGISTERED_MODEL))
MLFLOW_MV: Content = json_body(obj(("model_version",), model_version=MLFLOW_MODEL_VERSION))
MLFLOW_RMS: Content = json_body(
    obj(("registered_models",), registered_models={"type": "array", "items": MLFLOW_REGISTERED_MODEL},
        next_page_token=STRING)
)  # fmt: skip
MLFLOW_MVS: Content = json_body(
    obj(("model_versions",), model_versions={"type": "array", "items": MLFLOW_MODEL_VERSION}, next_page_token=STRING)
)
MLFLOW_DOWNLOAD_URI: Content = json_body(obj(("artifact_uri",), artifact_uri=STRING))


def mlflow_request(required: str, optional: str = "") -> Content:
    """A JSON request body of MLflow's API with these fields (space-separated names): ``version`` a number or
    its string, ``tags`` a list of ``{"key", "value"}``, every other one a string."""
    types = {"version": _MLFLOW_VERSION_NUMBER, "tags": _MLFLOW_TAGS}
    fields = {key: types.get(key, STRING) for key in (required + " " + optional).split()}
    return json_body(obj(tuple(required.split()), **fields))


# -- traces ---------------------------------------------------------------------------------------------

TRACES: Content = json_body(
    obj(("traces", "next_page_token"), traces={"type": "array", "items": OBJECT}, next_page_token=NULLABLE_STRING)
)
_NULLABLE_INTEGER: JsonSchema = {"type": ["integer", "null"]}
_NULLABLE_NUMBER: JsonSchema = {"type": ["number", "null"]}
ASSESSMENT = obj(
    ("id", "name", "source_type", "value", "score", "label", "created_at", "metadata"),
    id=STRING,
    trace_id=NULLABLE_STRING,
    span_id=NULLABLE_STRING,
    evaluation_id=NULLABLE_STRING,
    item_index=_NULLABLE_INTEGER,
    name=STRING,
    source_type={"enum": ["LLM_JUDGE", "HUMAN", "CODE"]},
    source_id=NULLABLE_STRING,
    value={"description": "The verdict (any JSON; null for an error assessment)"},
    score=_NULLABLE_NUMBER,
    label=NULLABLE_STRING,
    rationale=NULLABLE_STRING,
    error_code=NULLABLE_STRING,
    error_message=NULLABLE_STRING,
    judge_prompt_name=NULLABLE_STRING,
    judge_prompt_version=_NULLABLE_INTEGER,
    judge_model=NULLABLE_STRING,
    judge_trace_id=NULLABLE_STRING,
    input_tokens=_NULLABLE_INTEGER,
    output_tokens=_NULLABLE_INTEGER,
    cost_usd=_NULLABLE_NUMBER,
    latency_ms=_NULLABLE_NUMBER,
    attempts=_NULLABLE_INTEGER,
    created_at=INTEGER,
    metadata=OBJECT,
)
TRACE: Content = json_body(
    obj(
        ("trace_id", "summaries", "assessments"),
        trace_id=STRING,
        summaries={"type": "array", "items": OBJECT},
        assessments={"type": "array", "items": ASSESSMENT},
    )
)
FEEDBACK: Content = json_body(
    obj(
        ("name", "value"),
        name={**STRING, "minLength": 1, "maxLength": 255},
        value={"type": ["boolean", "number", "string"], "description": "bool: score 1/0, label yes/no; "
               "number: the score; string: the label"},
        rationale=NULLABLE_STRING,
        source_id={**NULLABLE_STRING, "description": "Who gives it: the same source_id again replaces its label"},
        span_id={**NULLABLE_STRING, "description": "An LLM call of the trace (default: its only one)"},
        metadata={"type": ["object", "null"]},
    )
)  # fmt: skip

# -- the OpenAI-compatible proxy (bodies pass through: only what the gateway reads is described) ---------------

_MODEL = {**STRING, "description": "The name of a route in the llm section of the configuration"}
CHAT_REQUEST: Content = json_body(
    obj(
        ("model", "messages"),
        model=_MODEL,
        messages={"type": "array", "items": obj(("role",), role=STRING)},
        stream={"type": "boolean"},
        max_tokens=INTEGER,
    )
)
COMPLETION_REQUEST: Content = json_body(obj(("model", "prompt"), model=_MODEL, prompt={}, stream={"type": "boolean"}))
EMBEDDING_REQUEST: Content = json_body(obj(("model", "input"), model=_MODEL, input={}))
_COMPLETION = obj(("object",), id=STRING, object=STRING, model=STRING, choices={"type": "array"}, usage=OBJECT)
COMPLETION: Content = {
    "application/json": {"schema": _COMPLETION},
    "text/event-stream": {"schema": {**STRING, "description": "Server-sent events ending with data: [DONE]"}},
}
EMBEDDINGS: Content = json_body(obj(("data",), object=STRING, data={"type": "array"}, model=STRING, usage=OBJECT))
MODEL_LIST: Content = json_body(obj(("data",), object=STRING, data={"type": "array", "items": obj(("id",), id=STRING)}))
_EVENTS = {**STRING, "description": "Server-sent events, typed (event: ...), relayed one to one"}
RESPONSES_REQUEST: Content = json_body(
    obj(
        ("model",),
        model=_MODEL,
        input={"description": "A string, or a list of input items"},
        instructions=STRING,
        previous_response_id={**STRING, "description": "Continued at the target that created it"},
        prompt=obj(("id",), id={**STRING, "description": "prompts:/NAME@ALIAS or prompts:/NAME/VERSION: rendered "
                                "from this gateway's registry; any other id goes to the provider"},
                   version=STRING, variables=OBJECT),
        stream={"type": "boolean"},
        max_output_tokens=INTEGER,
    )
)  # fmt: skip
_RESPONSE = obj(("id", "object"), id=STRING, object=STRING, model=STRING, status=STRING, output={"type": "array"},
                usage={"type": ["object", "null"]})  # fmt: skip
RESPONSE: Content = {"application/json": {"schema": _RESPONSE}, "text/event-stream": {"schema": _EVENTS}}
ITEM_LIST: Content = json_body(obj(("data",), object=STRING, data={"type": "array"}, has_more={"type": "boolean"}))
INPUT_TOKENS: Content = json_body(obj(("input_tokens",), object=STRING, input_tokens=INTEGER))
MESSAGES_REQUEST: Content = json_body(
    obj(
        ("model", "messages"),
        model=_MODEL,
        messages={"type": "array", "items": obj(("role",), role=STRING)},
        system={},
        max_tokens=INTEGER,
        stream={"type": "boolean"},
    )
)
_MESSAGE = obj(("id", "type"), id=STRING, type=STRING, model=STRING, content={"type": "array"}, usage=OBJECT)
MESSAGE: Content = {"application/json": {"schema": _MESSAGE}, "text/event-stream": {"schema": _EVENTS}}
TOKEN_COUNT: Content = json_body(obj(("input_tokens",), input_tokens=INTEGER))
LLM_ERRORS = {
    400: "Malformed body (or nested deeper than http.max_json_depth, code json_too_deep), or a field the upstream "
    "refused",
    401: "No valid gateway key (when auth.keys is set), or a revoked or expired one",
    403: "The key lacks the llm scope, or may not use this model or path",
    404: "No route for the requested model, or an unknown linked prompt",
    413: "Body larger than llm.max_body_bytes",
    429: "The key's rate limit (code rate_limit_exceeded) or budget (insufficient_quota), or the upstream's "
    "rate limit (Retry-After)",
    502: "Every upstream target failed",
    503: "No upstream could be reached",
    504: "The upstream did not answer in time",
}
RESPONSES_ERRORS = {**LLM_ERRORS, 404: LLM_ERRORS[404] + ", or an unknown previous_response_id"}
MESSAGES_ERRORS = {**LLM_ERRORS, 400: LLM_ERRORS[400] + ", or a route that is not of provider anthropic"}
FOLLOW_UP_ERRORS = {
    401: LLM_ERRORS[401],
    404: "A response this gateway did not relay (or no longer knows), or one its target no longer has",
    502: "The response's target failed",
    503: "The response's target could not be looked up (Redis unavailable)",
    504: "The response's target did not answer in time",
}

# -- gateway keys and usage -------------------------------------------------------------------------------------

_NAMES: JsonSchema = {"type": "array", "items": STRING, "minItems": 1}
_NULLABLE_NAMES: JsonSchema = {"type": ["array", "null"], "items": STRING}
GATEWAY_KEY = obj(
    ("id", "name", "prefix", "scopes", "state", "created_at"),
    id=STRING,
    name=STRING,
    prefix={**STRING, "description": "The key's first characters, for display (the key itself is never shown)"},
    scopes={"type": "array", "items": STRING},
    models=_NULLABLE_NAMES,
    routes=_NULLABLE_NAMES,
    rpm=_NULLABLE_INTEGER,
    tpm=_NULLABLE_INTEGER,
    budget_usd=_NULLABLE_NUMBER,
    budget_period={"type": ["string", "null"], "enum": ["day", "week", "month", None]},
    expires_at=_NULLABLE_INTEGER,
    revoked_at=_NULLABLE_INTEGER,
    created_at=INTEGER,
    updated_at=INTEGER,
    rotated_at=_NULLABLE_INTEGER,
    state={"enum": ["active", "revoked", "expired"]},
)
NEW_GATEWAY_KEY: Content = json_body(
    {**GATEWAY_KEY, "required": [*GATEWAY_KEY["required"], "key"],
     "properties": {**GATEWAY_KEY["properties"], "key": {**STRING, "description": "The key: shown this once"}}}
)  # fmt: skip
GATEWAY_KEYS: Content = json_body(obj(("keys",), keys={"type": "array", "items": GATEWAY_KEY}))
CREATE_KEY: Content = json_body(
    obj(
        ("name", "scopes"),
        name={**STRING, "minLength": 1, "maxLength": 128},
        scopes=_NAMES,
        models={**_NAMES, "description": "Only these LLM routes (the model of a /v1 call)"},
        routes={**_NAMES, "description": "Only these paths of the route table"},
        rpm={"type": "integer", "minimum": 1, "description": "Requests per minute on /v1"},
        tpm={"type": "integer", "minimum": 1, "description": "Tokens per minute on /v1"},
        budget_usd={"type": "number", "exclusiveMinimum": 0},
        budget_period={"enum": ["day", "week", "month"]},
        expires_at={"type": ["string", "integer"], "description": "A date, an ISO 8601 time or epoch ms"},
    )
)
_USAGE_ROW = obj(
    ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd"),
    key=NULLABLE_STRING,
    day=STRING,
    model=NULLABLE_STRING,
    route=NULLABLE_STRING,
    requests=INTEGER,
    input_tokens=INTEGER,
    output_tokens=INTEGER,
    total_tokens=INTEGER,
    cost_usd={"type": "number"},
)
USAGE: Content = json_body(
    obj(("groups", "total"), group_by=NULLABLE_STRING, groups={"type": "array", "items": _USAGE_ROW}, total=_USAGE_ROW)
)
