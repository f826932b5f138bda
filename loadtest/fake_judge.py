"""The fake upstream's judge mode: verdicts for LLM-judge requests, scripted or from simple heuristics.

fake_upstream.py hands every chat request whose ``response_format.json_schema.name`` starts with
``judge_`` to :func:`verdict_text`; the judge name is the rest of that name (``judge_correctness`` ->
``correctness``) and the answer's message content is the verdict text. Like fake_upstream.py, this
module imports nothing from ``gateway`` or ``judges``: it stands in for a provider, so it must not
share code with the judges it answers (issue 11).

The verdict, the first rule that applies:

1. **A scripted marker** anywhere in the request's user messages: ``[[verdict.<judge name>=<json>]]``
   (for that judge only) wins over ``[[verdict=<json>]]`` (every judge). The JSON is the result
   value as is: ``true``, ``4``, ``"good"``, even ``[1]`` to script a wrong type. A marker inside
   inputs rendered as JSON (its quotes escaped, ``\\"good\\"``) is read too. Tests put markers in
   the content they judge, so they know the right answer.
2. **A heuristic** for the six built-in judges, reading the tagged sections of the user message
   (``<inputs>``, ``<outputs>``, ``<expectations>``, ``<guidelines>``; a section holding JSON is
   read as its string values). Words are runs of two letters or more, lower-cased, accents and stop
   words dropped, compared by a crude stem (plural ``s``, ``ing``/``ed`` and a final ``e`` dropped,
   then the first 6 letters); numbers are compared as written (``1,000`` = ``1000``). Imperfect on
   purpose, as a real judge is (tests/loadtest/test_fake_judge_calibration.py measures how much on
   judges/data/calibration.jsonl):

   - ``relevance_to_query``: yes when the output shares a word with the question (question words
     such as "what" or "explain" left out), or is a short direct answer (at most 12 words, as
     "Canberra."); no for an empty output or a longer one sharing no word.
   - ``safety``: no when the output holds a term of a small abuse and harm lexicon (``_UNSAFE``:
     insults, poison, weapons, break-ins, account theft...); yes otherwise. A safe answer that
     names a poison is flagged; harm phrased in other words passes.
   - ``conciseness``: no when the output is longer than 50 words or holds a filler phrase
     (``_FILLER``: "great question", "I hope this helps"...); yes otherwise. Padding an answer
     never makes it more concise: adding words or filler can only turn a yes into a no.
   - ``correctness``: against ``expected_response`` (or every one of ``expected_facts``): a leading
     yes/no must not contradict the expected one; then an expectation with numbers is met by its
     numbers alone, every one in the output ("100 °C" meets "100 degrees Celsius"), and one without
     by at least 60% of its words that the question does not already hold. A wrong answer that
     keeps the expected wording ("not Canberra") passes; a right one in other words, or with a
     number left out ("November 1989" for "9 November 1989"), fails. No expectations: no.
   - ``groundedness``: at least 60% of the output's words and every one of its numbers appear in
     ``expectations.context`` (a string or a list of strings); no context: no.
   - ``guidelines``: each guideline (a line or sentence of ``<guidelines>``, or an item of a JSON
     list) of a shape it recognises is checked: "must/should mention|include X" (X's words
     present), "must not / never / do not mention|use|say X" and "avoid X" (X's words absent),
     "at most|under|no more than|fewer than N words", "polite|respectful|professional|courteous"
     (nothing from the abuse lexicon); any other guideline passes, as a lenient judge would.

   The pass/fail becomes the requested value: a boolean as is; an integer or number scale its
   maximum or minimum; a label list a yes-like label ("yes", "pass", "good", "correct", ...) or a
   no-like one, else the first or the last label.
3. **A default for custom judges**, per value schema: ``true``; an integer range's midpoint
   (rounded down); a number range's midpoint; the first label of an ``enum``; 0 or 0.0 for a scale
   without bounds and ``"default"`` for a free string.

The rationale names the rule that gave the verdict. Format knobs (fake_upstream.py's module doc)
change how the verdict is written: ``judge_format`` and ``judge_format_first``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

JUDGE_SCHEMA_PREFIX = "judge_"
FORMATS = ("json", "fenced", "preamble", "yes_word", "digit_string", "wrong_type", "out_of_range", "no_json")
MAX_CONCISE_WORDS = 50
SHORT_ANSWER_WORDS = 12
COVERAGE = 0.6
PREAMBLE = "Let me weigh the response against the criteria step by step. My assessment follows.\n\n"
NO_JSON_TEXT = "I read the response carefully, but I would rather explain my view in prose than give a verdict."

_MARKER = re.compile(r"\[\[verdict(?:\.([^=\]\s]+))?=")
_LETTERS = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")

_STOPWORDS_TEXT = """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves may might must
    shall one s t don doesn isn aren wasn weren ll ve re d m"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
# words that ask rather than say what the question is about
_QUESTION_TEXT = (
    "explain describe tell name give list define mean meaning called call happens happen main way ways "
    "difference please briefly simple simply kind type example"
)
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
_UNSAFE = (
    # abuse
    "idiot", "stupid", "moron", "dumb", "imbecile", "worthless", "pathetic", "loser", "clown", "shut up",
    "get lost", "nobody cares", "hate you", "waste of space", "kill yourself",
    # harm
    "poison", "laced", "explosive", "bomb", "weapon", "untraceable", "steal", "shoplift", "hotwire",
    "break into", "break in", "pick the lock", "crowbar", "phishing", "fake login", "malware", "keylogger",
    "spyware", "overdose", "self-harm", "hurt them", "revenge", "fake id", "forge", "counterfeit", "launder",
    "bleach and ammonia", "without them knowing", "don't get caught", "get away with", "their password",
    "stalk", "track their phone", "slash their", "set fire",
)  # fmt: skip
_FILLER = (
    "great question", "good question", "excellent question", "as an ai", "i hope this helps", "hope this helps",
    "let me know if", "feel free to", "it is worth noting", "it's worth noting", "it is important to note",
    "it's important to note", "needless to say", "at the end of the day", "in conclusion", "to summarize",
    "to sum up", "in summary", "first and foremost", "without further ado", "as you may know",
    "as we all know", "i'd be happy to", "i would be happy to", "happy to help", "thanks for asking",
    "that's a really", "that is a really", "let's dive", "let me explain", "simply put", "to put it simply",
    "all things considered", "interestingly enough", "fascinating topic", "rest assured",
)  # fmt: skip
_YES_LABELS = ("yes", "pass", "passed", "true", "good", "correct", "safe", "relevant", "concise", "grounded", "ok")
_NO_LABELS = ("no", "fail", "failed", "false", "bad", "incorrect", "unsafe", "irrelevant", "verbose", "ungrounded")


def judge_name(body: Mapping[str, Any]) -> str | None:
    """The judge a chat request asks for (the json_schema name after ``judge_``), or None: not a judge call."""
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping):
        return None
    schema = response_format.get("json_schema")
    name = schema.get("name") if isinstance(schema, Mapping) else None
    if isinstance(name, str) and name.startswith(JUDGE_SCHEMA_PREFIX):
        return name[len(JUDGE_SCHEMA_PREFIX) :]
    return None


def verdict_text(body: Mapping[str, Any], knobs: Mapping[str, Any], judge_call: int) -> str:
    """The message content answering a judge request; ``judge_call`` numbers this model name's judge calls from 1.

    Raises ValueError for an unknown ``judge_format`` (the fake answers it with a 400 naming the knob).
    """
    name = judge_name(body) or ""
    schema = result_schema(body)
    text = user_text(body.get("messages"))
    result, rationale = verdict(name, schema, text)
    fmt = str(knobs.get("judge_format", "json"))
    if fmt not in FORMATS:
        raise ValueError(f"unknown judge_format {fmt!r}: one of {', '.join(FORMATS)}")
    first = knobs.get("judge_format_first")
    if first is not None and judge_call > int(first):
        fmt = "json"
    return render(result, rationale, fmt, schema)


def result_schema(body: Mapping[str, Any]) -> dict[str, Any]:
    """The value schema of the verdict (``properties.result`` of the json_schema); a boolean when absent."""
    try:
        found = body["response_format"]["json_schema"]["schema"]["properties"]["result"]
    except (KeyError, TypeError):
        return {"type": "boolean"}
    return dict(found) if isinstance(found, Mapping) else {"type": "boolean"}


def user_text(messages: Any) -> str:
    """Every user message's text, in order (a repair request's second user message comes after the first)."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "\n".join(parts)


def verdict(name: str, schema: Mapping[str, Any], text: str) -> tuple[Any, str]:
    """(result value, rationale) for judge ``name`` asked about ``text``: marker, heuristic or default."""
    scripted = _markers(text)
    if name in scripted:
        return scripted[name], f"scripted by the [[verdict.{name}=...]] marker"
    if "" in scripted:
        return scripted[""], "scripted by the [[verdict=...]] marker"
    heuristic = _HEURISTICS.get(name)
    if heuristic is not None:
        passed, reason = heuristic(_Sections(text))
        return shape(passed, schema), reason
    return default_value(schema), "default verdict of the fake judge for a custom judge"


def default_value(schema: Mapping[str, Any]) -> Any:
    """True, the range midpoint (an integer one rounded down) or the first label."""
    kind = schema.get("type")
    labels = schema.get("enum")
    if isinstance(labels, list) and labels:
        return labels[0]
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "integer":
        if low is not None and high is not None:
            return (int(low) + int(high)) // 2
        return int(low if low is not None else high if high is not None else 0)
    if kind == "number":
        if low is not None and high is not None:
            return (float(low) + float(high)) / 2
        return float(low if low is not None else high if high is not None else 0.0)
    if kind == "string":
        return "default"
    return True


def shape(passed: bool, schema: Mapping[str, Any]) -> Any:
    """A heuristic's pass/fail as the requested value."""
    labels = schema.get("enum")
    if isinstance(labels, list) and labels:
        wanted = _YES_LABELS if passed else _NO_LABELS
        for label in labels:
            if isinstance(label, str) and label.lower() in wanted:
                return label
        return labels[0] if passed else labels[-1]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        bound = schema.get("maximum" if passed else "minimum")
        if bound is None:
            bound = 1 if passed else 0
        return int(bound) if kind == "integer" else float(bound)
    return passed


def render(result: Any, rationale: str, fmt: str, schema: Mapping[str, Any]) -> str:
    """The verdict written in format ``fmt`` (the ``judge_format`` knob)."""
    if fmt == "no_json":
        return NO_JSON_TEXT
    if fmt == "yes_word" and isinstance(result, bool):
        result = "Yes" if result else "No"
    elif fmt == "digit_string" and isinstance(result, int | float) and not isinstance(result, bool):
        result = json.dumps(result)
    elif fmt == "wrong_type":
        result = [result]
    elif fmt == "out_of_range":
        result = _out_of_range(schema)
    answer = json.dumps({"rationale": rationale, "result": result})
    if fmt == "fenced":
        return f"```json\n{answer}\n```"
    if fmt == "preamble":
        return PREAMBLE + answer
    return answer


def _out_of_range(schema: Mapping[str, Any]) -> Any:
    """maximum + 1 for a scale (minimum - 1 without a maximum); a label not in the list; 2 for a boolean."""
    labels = schema.get("enum")
    if isinstance(labels, list) and labels:
        return "not_one_of_the_labels"
    kind = schema.get("type")
    if kind in ("integer", "number"):
        high, low = schema.get("maximum"), schema.get("minimum")
        value = high + 1 if high is not None else (low - 1 if low is not None else 10**9)
        return int(value) if kind == "integer" else float(value)
    return 2


def _markers(text: str) -> dict[str, Any]:
    """Scripted results by judge name ("" for the every-judge marker); the first of each name wins."""
    found: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    for match in _MARKER.finditer(text):
        name = match.group(1) or ""
        if name in found:
            continue
        start = match.end()
        try:
            value, end = decoder.raw_decode(text, start)
            if text.startswith("]]", end):
                found[name] = value
                continue
        except json.JSONDecodeError:
            pass
        close = text.find("]]", start)
        if close < 0:
            continue
        try:  # the marker sat in a JSON string: its quotes arrive escaped
            found[name] = json.loads(json.loads(f'"{text[start:close]}"'))
        except json.JSONDecodeError:
            continue
    return found


class _Sections:
    """The tagged sections of a judge prompt, raw and as plain text: the first ``<tag>...</tag>`` of each (from
    its last opening tag, so instructions that name a tag before the section itself do not count)."""

    def __init__(self, text: str) -> None:
        self.raw: dict[str, str | None] = {}
        for tag in ("inputs", "outputs", "expectations", "guidelines"):
            match = re.search(rf"<{tag}>((?:(?!<{tag}>).)*?)</{tag}>", text, re.DOTALL)
            self.raw[tag] = match.group(1).strip() if match else None

    def text(self, tag: str) -> str:
        raw = self.raw.get(tag)
        if raw is None:
            return ""
        decoded = _json_or_none(raw)
        return raw if decoded is None else " ".join(_strings(decoded))

    def expectations(self) -> dict[str, Any]:
        raw = self.raw.get("expectations")
        if not raw:
            return {}
        decoded = _json_or_none(raw)
        if isinstance(decoded, dict):
            return decoded
        return {"expected_response": raw if decoded is None else " ".join(_strings(decoded))}


def _json_or_none(raw: str) -> Any:
    if not raw or raw[0] not in '{["':
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def _stem(word: str) -> str:
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word[:6]


def _fold(text: str) -> str:
    """Lower case without accents (García -> garcia)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def stems(text: str, *, skip: frozenset[str] = frozenset()) -> set[str]:
    """The content words of ``text`` (two letters or more, no stop words, nothing in ``skip``), stemmed."""
    return {_stem(w) for w in _LETTERS.findall(_fold(text)) if len(w) > 1 and w not in _STOPWORDS and w not in skip}


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _unsafe_term(text: str) -> str | None:
    lowered = " ".join(text.lower().split())
    for term in _UNSAFE:
        if re.search(rf"\b{re.escape(term)}(?:s|es|d|ed|ing|er|ers|ous)?\b", lowered):
            return term
    return None


def _relevance(s: _Sections) -> tuple[bool, str]:
    question, output = s.text("inputs"), s.text("outputs")
    words = len(output.split())
    if not words:
        return False, "the output is empty"
    shared = stems(question, skip=_QUESTION_WORDS) & stems(output)
    if shared:
        return True, f"the output addresses the question: shares {', '.join(sorted(shared)[:5])}"
    if words <= SHORT_ANSWER_WORDS:
        return True, f"a short direct answer ({words} words)"
    return False, f"the output ({words} words) shares no key term with the question"


def _safety(s: _Sections) -> tuple[bool, str]:
    term = _unsafe_term(s.text("outputs"))
    if term is not None:
        return False, f"the output contains harmful or abusive content ({term!r})"
    return True, "nothing harmful or abusive found in the output"


def _conciseness(s: _Sections) -> tuple[bool, str]:
    output = s.text("outputs")
    lowered = " ".join(output.lower().split())
    filler = next((f for f in _FILLER if f in lowered), None)
    words = len(output.split())
    if filler is not None:
        return False, f"the output pads its answer ({filler!r})"
    if words > MAX_CONCISE_WORDS:
        return False, f"the output is long: {words} words (more than {MAX_CONCISE_WORDS})"
    return True, f"the output is to the point ({words} words, no filler)"


def _covers(expected: str, output: str, question_stems: set[str]) -> tuple[bool, str]:
    """Whether ``output`` says what ``expected`` says beyond the question: its numbers, else most of its words."""
    expected_numbers = numbers(expected)
    missing_numbers = expected_numbers - numbers(output)
    if missing_numbers:
        return False, f"the output lacks {', '.join(sorted(missing_numbers))} from the expected answer"
    if expected_numbers:
        return True, f"the output has the expected {', '.join(sorted(expected_numbers))}"
    novel = stems(expected) - question_stems
    have = stems(output)
    share = len(novel & have) / len(novel) if novel else 1.0
    if share < COVERAGE:
        missing = ", ".join(sorted(novel - have)[:5])
        return False, f"the output covers {share:.0%} of the expected answer (missing {missing})"
    return True, f"the output matches the expected answer ({share:.0%} of its key terms)"


def _polarity(text: str) -> str | None:
    first = _LETTERS.findall(text.lower()[:20])
    return first[0] if first and first[0] in ("yes", "no") else None


def _correctness(s: _Sections) -> tuple[bool, str]:
    expectations = s.expectations()
    output = s.text("outputs")
    question_stems = stems(s.text("inputs"), skip=_QUESTION_WORDS)
    facts = expectations.get("expected_facts")
    if isinstance(facts, list) and facts:
        for fact in facts:
            ok, reason = _covers(str(fact), output, question_stems)
            if not ok:
                return False, f"fact {str(fact)!r} not supported: {reason}"
        return True, f"all {len(facts)} expected facts are in the output"
    expected = expectations.get("expected_response")
    if not isinstance(expected, str) or not expected.strip():
        return False, "no expected_response or expected_facts to compare with"
    want, got = _polarity(expected), _polarity(output)
    if want and got and want != got:
        return False, f"the output answers {got!r} where {want!r} is expected"
    return _covers(expected, output, question_stems)


def _groundedness(s: _Sections) -> tuple[bool, str]:
    context = s.expectations().get("context")
    context_text = " ".join(_strings(context)) if context is not None else ""
    if not context_text.strip():
        return False, "no context to ground the output in"
    said = stems(s.text("outputs"))
    if not said:
        return False, "the output is empty"
    unsupported_numbers = numbers(s.text("outputs")) - numbers(context_text)
    if unsupported_numbers:
        return False, f"the context does not support {', '.join(sorted(unsupported_numbers))}"
    share = len(said & stems(context_text)) / len(said)
    if share < COVERAGE:
        return False, f"only {share:.0%} of the output is supported by the context"
    return True, f"{share:.0%} of the output is supported by the context"


_MUST = re.compile(r"\b(?:must|should|needs? to|has to|have to|always)\s+(?:mention|include|contain|say|state)\s+(.+)")
_MUST_NOT = re.compile(
    r"\b(?:must not|mustn't|should not|shouldn't|never|do not|don't|does not|cannot|may not)\s+"
    r"(?:mention|include|contain|use|say|state|discuss|reveal|name)\s+(.+)"
)
_AVOID = re.compile(r"\bavoid(?:s|ing)?\s+(?:mentioning\s+|using\s+|discussing\s+)?(.+)")
_MAX_WORDS = re.compile(r"\b(?:at most|under|no more than|fewer than|less than|within|maximum of)\s+(\d+)\s+words")
_PHRASE_END = re.compile(r"[.,;:!?]|\s(?:and|but|or)\s+(?:be|keep|stay|use|avoid|never|must|should|do|don't)\b")
_POLITE = re.compile(r"\b(?:polite|respectful|professional|courteous|friendly)\b")


def _guideline_items(raw: str) -> list[str]:
    decoded = _json_or_none(raw)
    if decoded is not None:
        return [g for g in _strings(decoded) if g.strip()]
    return [g.strip(" -*\t") for g in _SENTENCE_END.split(raw) if g.strip(" -*\t")]


def _phrase_stems(phrase: str) -> set[str]:
    """The words of what a guideline names: up to a punctuation mark or a further clause ("... and be polite")."""
    return stems(_PHRASE_END.split(phrase, maxsplit=1)[0])


def _check_guideline(guideline: str, output: str) -> str | None:
    """Why the output breaks ``guideline``, or None (also for a guideline of a shape not recognised)."""
    lowered = guideline.lower()
    have = stems(output)
    limit = _MAX_WORDS.search(lowered)
    if limit and len(output.split()) > int(limit.group(1)):
        return f"{len(output.split())} words, more than {limit.group(1)}"
    banned = _MUST_NOT.search(lowered) or _AVOID.search(lowered)
    if banned:
        words = _phrase_stems(banned.group(1))
        if words and words <= have:
            return f"it mentions {banned.group(1).strip(' .')!r}"
    required = None if banned else _MUST.search(lowered)
    if required:
        words = _phrase_stems(required.group(1))
        if words and not words <= have:
            return f"it does not mention {required.group(1).strip(' .')!r}"
    if _POLITE.search(lowered):
        term = _unsafe_term(output)
        if term is not None:
            return f"it is not polite ({term!r})"
    return None


def _guidelines(s: _Sections) -> tuple[bool, str]:
    raw = s.raw.get("guidelines")
    if not raw:
        return True, "no guidelines given"
    output = s.text("outputs")
    items = _guideline_items(raw)
    for item in items:
        broken = _check_guideline(item, output)
        if broken is not None:
            return False, f"breaks the guideline {item!r}: {broken}"
    return True, f"meets the {len(items)} guideline(s) checked"


_HEURISTICS = {
    "relevance_to_query": _relevance,
    "safety": _safety,
    "conciseness": _conciseness,
    "guidelines": _guidelines,
    "correctness": _correctness,
    "groundedness": _groundedness,
}
BUILTINS = tuple(_HEURISTICS)
