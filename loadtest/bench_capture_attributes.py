"""What MLflow's inputs/outputs attributes cost a captured LLM call (gateway/llm/content.py).

Run ``python loadtest/bench_capture_attributes.py`` from the repository. In process, medians of ``--repeat``
passes of ``--number`` calls each, for a chat call of two input messages (~130 and ~240 characters) and a
~250-character answer, ``capture_max_chars`` 8192:

1. on the event loop, at the SERVER span's end (after the answer was sent): the capture work that existed
   (``input_messages`` and two ``to_attribute_text``) and what ``mlflow.spanInputs`` / ``spanOutputs`` add
   (``mlflow_inputs`` and ``mlflow_outputs``);
2. in the span exporter's thread: the OTLP encoding of that SERVER span without and with the two attributes,
   and its size in bytes.

Nothing of this runs with capture off.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.llm import content

LIMIT = 8192
REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly. " * 3},
        {"role": "user", "content": "Which planet is the largest in the solar system, and why? " * 4},
    ]
}
ANSWER = {
    "choices": [
        {"message": {"role": "assistant", "content": "Jupiter is the largest planet. " * 8}, "finish_reason": "stop"}
    ]
}


def median_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def _span(attributes: dict[str, Any]) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("bench").start_as_current_span("POST /v1/chat/completions", attributes=attributes):
        pass
    (span,) = exporter.get_finished_spans()
    return span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    inputs = content.input_messages("chat", REQUEST)
    outputs = content.output_messages_from_response("chat", ANSWER)

    def existing() -> None:
        content.to_attribute_text(content.input_messages("chat", REQUEST), LIMIT)
        content.to_attribute_text(outputs, LIMIT)

    def added() -> None:
        content.mlflow_inputs(inputs, LIMIT)
        content.mlflow_outputs(outputs, LIMIT)

    print(f"event loop, existing capture work: {median_us(existing, args.number, args.repeat):.2f} us per call")
    print(
        f"event loop, added mlflow.spanInputs/spanOutputs: {median_us(added, args.number, args.repeat):.2f} us per call"
    )
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.usage.input_tokens": 9,
        "gen_ai.input.messages": content.to_attribute_text(inputs, LIMIT)[0],
        "gen_ai.output.messages": content.to_attribute_text(outputs, LIMIT)[0],
    }
    mlflow = {
        "mlflow.spanInputs": content.mlflow_inputs(inputs, LIMIT),
        "mlflow.spanOutputs": content.mlflow_outputs(outputs, LIMIT),
    }
    for label, span in (("without", _span(base)), ("with", _span({**base, **mlflow}))):

        def encode(span: ReadableSpan = span) -> bytes:
            return bytes(encode_spans([span]).SerializeToString())

        size = len(encode())
        cost_us = median_us(encode, args.number // 4, args.repeat)
        print(f"exporter thread, OTLP encoding {label}: {cost_us:.2f} us, {size} bytes")


if __name__ == "__main__":
    main()
