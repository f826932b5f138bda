"""Every span attribute, span name part and metric name the gateway emits or reads, in one place.

The GenAI conventions are still marked Development and move between releases, so a rename here is
one edit. We follow the newest text (the ``open-telemetry/semantic-conventions-genai`` repository:
``gen_ai.provider.name``, ``gen_ai.client.inference.*`` metrics, ``gen_ai.response.time_to_first_chunk``,
``gen_ai.prompt.name|version``, JSON ``gen_ai.input.messages|output.messages``).
"""

from __future__ import annotations

from typing import Final

SEMCONV_SOURCE: Final = "open-telemetry/semantic-conventions-genai (Development)"

# --- HTTP and server (general conventions) ---------------------------------------------------------
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
HTTP_ROUTE: Final = "http.route"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_OTHER: Final = "_OTHER"

# --- GenAI inference ----------------------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
# formerly gen_ai.usage.cache_creation.input_tokens (Anthropic's cache_creation_input_tokens)
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
GEN_AI_PROMPT_VERSION: Final = "gen_ai.prompt.version"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
# the OpenAI flavour: which of its APIs a call used (chat_completions | responses)
OPENAI_API_TYPE: Final = "openai.api.type"
OPENAI_API_TYPE_RESPONSES: Final = "responses"

# --- GenAI evaluation (the gen_ai.evaluation.result event) -------------------------------------------
EVENT_GEN_AI_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"

# gen_ai.operation.name values
OPERATION_CHAT: Final = "chat"
OPERATION_TEXT_COMPLETION: Final = "text_completion"
OPERATION_EMBEDDINGS: Final = "embeddings"
# Not inference, so not the conventions' predefined values (custom values are allowed): the Responses API's
# follow-ups on a stored response, and token counting (/v1/messages/count_tokens, /v1/responses/input_tokens).
OPERATION_RETRIEVE_RESPONSE: Final = "retrieve_response"
OPERATION_DELETE_RESPONSE: Final = "delete_response"
OPERATION_CANCEL_RESPONSE: Final = "cancel_response"
OPERATION_LIST_INPUT_ITEMS: Final = "list_response_input_items"
OPERATION_COUNT_TOKENS: Final = "count_tokens"

# gen_ai.provider.name: what an OpenAI-compatible target is unless its config says otherwise
PROVIDER_OPENAI: Final = "openai"
# a target of this provider speaks the Anthropic Messages API (x-api-key, anthropic-version), not OpenAI's
PROVIDER_ANTHROPIC: Final = "anthropic"

# --- ours: the LLM proxy's spans (the SERVER span carries the call's summary) ---------------------------
GATEWAY_LLM_ROUTE: Final = "gateway.llm.route"  # marks the SERVER span the trace-summary sink keeps
GATEWAY_LLM_TARGET: Final = "gateway.llm.target"
GATEWAY_LLM_ATTEMPT: Final = "gateway.llm.attempt"
GATEWAY_LLM_ATTEMPTS: Final = "gateway.llm.attempts"
GATEWAY_LLM_FALLBACK: Final = "gateway.llm.fallback"
GATEWAY_AUTH_KEY_ID: Final = "gateway.auth.key_id"  # the gateway key's id, never the key
GATEWAY_USAGE_COST_USD: Final = "gateway.usage.cost_usd"  # from the answering target's prices, when it has them
# true when gen_ai.input.messages or gen_ai.output.messages was cut to capture_max_chars (absent otherwise)
GATEWAY_LLM_CONTENT_TRUNCATED: Final = "gateway.llm.content_truncated"

# --- MLflow's span attributes (its OTLP ingest reads them; gateway/llm/content.py) -----------------------
# On the proxy's SERVER span when capture is on: MLflow fills a trace's request and response columns from
# its root span's inputs and outputs (without them, from gen_ai.input.messages / output.messages as they are).
MLFLOW_SPAN_INPUTS: Final = "mlflow.spanInputs"
MLFLOW_SPAN_OUTPUTS: Final = "mlflow.spanOutputs"

# --- ours: judge calls (LlmProxy.complete's top span) and evaluation runs ------------------------------
GATEWAY_JUDGE_NAME: Final = "gateway.judge.name"
GATEWAY_JUDGE_PROMPT_NAME: Final = "gateway.judge.prompt.name"
GATEWAY_JUDGE_PROMPT_VERSION: Final = "gateway.judge.prompt.version"
GATEWAY_JUDGE_TARGET_TRACE_ID: Final = "gateway.judge.target_trace_id"
GATEWAY_JUDGE_TARGET_SPAN_ID: Final = "gateway.judge.target_span_id"
GATEWAY_EVALUATION_ID: Final = "gateway.evaluation.id"

# --- ours: /invocations SERVER spans -----------------------------------------------------------------
GATEWAY_MODEL_NAME: Final = "gateway.model.name"
GATEWAY_MODEL_VERSION: Final = "gateway.model.version"
GATEWAY_REQUEST_ROWS: Final = "gateway.request.rows"
GATEWAY_BATCH_ROWS: Final = "gateway.batch.rows"

# --- environment ------------------------------------------------------------------------------------
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# --- metrics (Prometheus form of the OTel names; "." becomes "_", the unit is a suffix) -----------------
METRIC_INFERENCE_DURATION: Final = "gen_ai_client_inference_duration_seconds"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai_client_inference_time_to_first_chunk_seconds"
METRIC_USAGE_INPUT_TOKENS: Final = "gen_ai_client_inference_usage_input_tokens_total"
METRIC_USAGE_OUTPUT_TOKENS: Final = "gen_ai_client_inference_usage_output_tokens_total"
METRIC_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai_client_inference_usage_cache_read_input_tokens_total"
METRIC_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai_client_inference_usage_cache_write_input_tokens_total"
METRIC_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai_client_inference_usage_reasoning_output_tokens_total"
METRIC_OPERATION_INPUT_TOKENS: Final = "gen_ai_client_inference_operation_input_tokens"
METRIC_OPERATION_OUTPUT_TOKENS: Final = "gen_ai_client_inference_operation_output_tokens"
METRIC_UPSTREAM_ERRORS: Final = "gateway_llm_upstream_errors_total"
METRIC_RETRIES: Final = "gateway_llm_retries_total"
METRIC_FALLBACKS: Final = "gateway_llm_fallbacks_total"
METRIC_REQUESTS: Final = "gateway_llm_requests_total"

# metric label names
LABEL_OPERATION: Final = "gen_ai_operation_name"
LABEL_PROVIDER: Final = "gen_ai_provider_name"
LABEL_REQUEST_MODEL: Final = "gen_ai_request_model"
LABEL_ROUTE: Final = "gateway_llm_route"
LABEL_ERROR_TYPE: Final = "error_type"
LABEL_TOKEN_MODALITY: Final = "gen_ai_token_modality"
LABEL_STATUS: Final = "status"
TOKEN_MODALITY_TEXT: Final = "text"
TOKEN_MODALITY_UNKNOWN: Final = "unknown"
