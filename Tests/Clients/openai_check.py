#!/usr/bin/env python3
"""Drives alignd's HTTP gateway with the official `openai` Python client (PyPI).

Used by Tests/AlignServerTests/HTTPGatewayTests.swift against a live alignd: each scenario named
on the command line runs through the client's public API and its outcome is printed as one JSON
object on stdout, keyed by scenario, for the Swift test to assert on:

    {"completion": {"text": ..., "finish_reason": ..., "model": ..., ...},
     "bad_temperature": {"exception": "BadRequestError", "status": 400, "body": {...}}, ...}

A scenario that raises one of the client's errors records the exception's class name, HTTP
status, error body and retry headers instead of failing the script, so typed errors are results.

Usage: openai_check.py --base-url http://127.0.0.1:PORT/v1 [--api-key KEY] [--model NAME] SCENARIO...
Scenarios: completion, chat, chat_stream, completion_stream, chat_logprobs, completion_n,
           moderation, models, bad_temperature, unknown_model, unknown_route, auth, rate_limit,
           admin_status, deadline, structured_parse, structured_stream, json_object,
           unsupported_schema, logit_bias, bad_logit_bias, tools_unstreamed, tools_streamed,
           tools_required, bad_tool_choice
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import openai
from openai import OpenAI

COMPLETION_PROMPT = "The capital of France is"
CHAT_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three primary colors."},
]
# The offensive-language classifier and the rules flag the first and pass the second.
OFFENSIVE = "You are a stupid worthless idiot and I will kill you, you piece of shit."
BENIGN = "The weather is lovely today; let's go for a walk in the park."


def error_result(error: openai.APIStatusError) -> dict:
    headers = error.response.headers
    return {
        "exception": type(error).__name__,
        "status": error.status_code,
        "body": error.body,
        "retry_after": headers.get("retry-after"),
        "retry_after_ms": headers.get("retry-after-ms"),
    }


def completion(client: OpenAI, model: str) -> dict:
    response = client.completions.create(
        model=model, prompt=COMPLETION_PROMPT, max_tokens=12, temperature=0, seed=7)
    choice = response.choices[0]
    return {
        "id": response.id, "object": response.object, "model": response.model,
        "system_fingerprint": response.system_fingerprint, "text": choice.text,
        "finish_reason": choice.finish_reason, "choices": len(response.choices),
        "usage": response.usage.model_dump(),
    }


def completion_stream(client: OpenAI, model: str) -> dict:
    stream = client.completions.create(
        model=model, prompt=COMPLETION_PROMPT, max_tokens=12, temperature=0, seed=7, stream=True)
    text, finish, chunks = "", None, 0
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
    return {"text": text, "finish_reason": finish, "chunks": chunks}


def chat(client: OpenAI, model: str) -> dict:
    response = client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, max_tokens=24, temperature=0, seed=7)
    choice = response.choices[0]
    return {
        "id": response.id, "object": response.object, "model": response.model,
        "system_fingerprint": response.system_fingerprint, "role": choice.message.role,
        "content": choice.message.content, "finish_reason": choice.finish_reason,
        "usage": response.usage.model_dump(),
    }


def chat_stream(client: OpenAI, model: str) -> dict:
    stream = client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, max_tokens=24, temperature=0, seed=7, stream=True,
        stream_options={"include_usage": True})
    content, role, finish, usage, chunks, objects = "", None, None, None, 0, set()
    for chunk in stream:
        chunks += 1
        objects.add(chunk.object)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            role = choice.delta.role or role
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return {
        "content": content, "role": role, "finish_reason": finish, "usage": usage, "chunks": chunks,
        "objects": sorted(objects),
    }


def chat_logprobs(client: OpenAI, model: str) -> dict:
    response = client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, max_tokens=6, temperature=0, seed=7, logprobs=True,
        top_logprobs=2)
    content = response.choices[0].logprobs.content
    return {
        "text": response.choices[0].message.content,
        "tokens": [entry.token for entry in content],
        "logprobs": [entry.logprob for entry in content],
        "top_counts": [len(entry.top_logprobs) for entry in content],
        # Greedy decoding picks the most likely token: its logprob equals the best alternative's.
        "greedy_is_top": all(abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-4 for entry in content),
    }


ECHO_PROMPT = "The quick brown fox jumps over the lazy dog."


def legacy_logprobs(choice) -> dict:
    """A completions choice's logprobs as plain lists (null where OpenAI answers null)."""
    logprobs = choice.logprobs
    return {
        "tokens": logprobs.tokens, "token_logprobs": logprobs.token_logprobs,
        "top_counts": [None if top is None else len(top) for top in logprobs.top_logprobs],
        "text_offset": logprobs.text_offset,
    }


def completion_echo(client: OpenAI, model: str) -> dict:
    # The prompt alone, scored (what evaluation harnesses send for log-likelihoods).
    scored = client.completions.create(
        model=model, prompt=ECHO_PROMPT, echo=True, logprobs=2, max_tokens=0, temperature=0)
    # The prompt and a greedy continuation; and the same continuation without echo.
    continued = client.completions.create(
        model=model, prompt=ECHO_PROMPT, echo=True, logprobs=1, max_tokens=4, temperature=0, seed=7)
    plain = client.completions.create(
        model=model, prompt=ECHO_PROMPT, logprobs=1, max_tokens=4, temperature=0, seed=7)
    # Echo without logprobs and without max_tokens 0.
    text_only = client.completions.create(
        model=model, prompt=ECHO_PROMPT, echo=True, max_tokens=4, temperature=0, seed=7)
    return {
        "prompt": ECHO_PROMPT,
        "scored_text": scored.choices[0].text, "scored_finish": scored.choices[0].finish_reason,
        "scored_usage": scored.usage.model_dump(), "scored": legacy_logprobs(scored.choices[0]),
        "continued_text": continued.choices[0].text, "continued": legacy_logprobs(continued.choices[0]),
        "plain_text": plain.choices[0].text, "plain": legacy_logprobs(plain.choices[0]),
        "text_only": text_only.choices[0].text, "text_only_logprobs": text_only.choices[0].logprobs is None,
    }


def completion_echo_stream(client: OpenAI, model: str) -> dict:
    stream = client.completions.create(
        model=model, prompt=ECHO_PROMPT, echo=True, logprobs=1, max_tokens=4, temperature=0, seed=7,
        stream=True)
    texts, tokens, token_logprobs, offsets, finish = [], [], [], [], None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.text:
                texts.append(choice.text)
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens
                token_logprobs += choice.logprobs.token_logprobs
                offsets += choice.logprobs.text_offset
            finish = choice.finish_reason or finish
    return {
        "first_text": texts[0] if texts else None, "text": "".join(texts), "tokens": tokens,
        "token_logprobs": token_logprobs, "text_offset": offsets, "finish_reason": finish,
    }


def completion_n(client: OpenAI, model: str) -> dict:
    response = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0.9, seed=11, n=2,
        stop=["\n\n", "THE END"])
    return {
        "indexes": [choice.index for choice in response.choices],
        "texts": [choice.text for choice in response.choices],
        "finish_reasons": [choice.finish_reason for choice in response.choices],
        "completion_tokens": response.usage.completion_tokens,
    }


def moderation(client: OpenAI, model: str) -> dict:
    response = client.moderations.create(input=[OFFENSIVE, BENIGN])
    results = []
    for result in response.results:
        categories = result.categories.model_dump(by_alias=True)
        scores = result.category_scores.model_dump(by_alias=True)
        results.append({
            "flagged": result.flagged,
            "flagged_categories": sorted(name for name, flagged in categories.items() if flagged),
            "max_score": max(value for value in scores.values() if value is not None),
            "harassment": scores.get("harassment"),
            "category_names": sorted(categories),
        })
    return {"model": response.model, "id": response.id, "results": results}


def models(client: OpenAI, model: str) -> dict:
    listing = client.models.list()
    return {"ids": [entry.id for entry in listing.data], "owned_by": sorted({entry.owned_by for entry in listing.data})}


def bad_temperature(client: OpenAI, model: str) -> dict:
    client.completions.create(model=model, prompt=COMPLETION_PROMPT, max_tokens=4, temperature=-1)
    return {"exception": None}


def unknown_model(client: OpenAI, model: str) -> dict:
    client.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, max_tokens=4)
    return {"exception": None}


def unknown_route(client: OpenAI, model: str) -> dict:
    # GET /v1/models/{id} is not a route of alignd.
    client.models.retrieve("no-such-model")
    return {"exception": None}


def auth(client: OpenAI, model: str) -> dict:
    client.completions.create(model=model, prompt=COMPLETION_PROMPT, max_tokens=4, temperature=0)
    return {"exception": None}


def admin_status(client: OpenAI, model: str) -> dict:
    # alignd's GET /v1/admin/status (Admin.GetStatus as JSON) through the client's generic get.
    status = client.get("/admin/status", cast_to=object)
    return {"exception": None, "state": status.get("state"), "roles": len(status.get("roles", []))}


def deadline(client: OpenAI, model: str) -> dict:
    # X-Request-Timeout is alignd's deadline header: 400 tokens cannot be decoded in 0.5 s.
    client.completions.create(
        model=model, prompt="Write a long story about a dragon.", max_tokens=400, temperature=0,
        extra_body={"ignore_eos": True}, extra_headers={"X-Request-Timeout": "0.5"})
    return {"exception": None}


def rate_limit(client: OpenAI, model: str) -> dict:
    """With --max-running-sequences 1 --queue-capacity 1: one streamed request decodes, a second
    waits in the queue, so a third is refused with 429 while both are in flight."""
    running = client.completions.create(
        model=model, prompt="Write a long story about a dragon.", max_tokens=400, temperature=0, stream=True,
        extra_body={"ignore_eos": True})  # alignd extension: decodes all 400 tokens (several seconds)
    first = next(iter(running))  # decoding has started
    queued_result: dict = {}

    def queued() -> None:
        try:
            response = client.completions.create(model=model, prompt="Hello", max_tokens=2, temperature=0)
            queued_result["text"] = response.choices[0].text
        except openai.APIStatusError as error:
            queued_result["error"] = error_result(error)

    waiter = threading.Thread(target=queued)
    waiter.start()
    time.sleep(1.0)  # the second request is queued behind the first
    try:
        client.completions.create(model=model, prompt="Hi", max_tokens=2, temperature=0)
        outcome = {"exception": None}
    except openai.APIStatusError as error:
        outcome = error_result(error)
    running.close()  # disconnect: the server cancels the first request and frees its slot
    waiter.join(timeout=60)
    outcome["first_chunk_object"] = first.object
    outcome["queued"] = queued_result
    return outcome


# Structured output (constrained decoding): Pydantic models the client turns into strict JSON
# schemas ($defs and $refs, enums, nested objects, arrays, Optional). A 135M model writes silly
# content; what is checked is that every finished answer parses and validates.
from typing import Literal, Optional  # noqa: E402

from openai.lib._pydantic import to_strict_json_schema  # noqa: E402
from pydantic import BaseModel, Field, ValidationError  # noqa: E402


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int


class Recipe(BaseModel):
    title: str = Field(max_length=40)
    ingredients: list[str] = Field(max_length=5)
    minutes: int


class Weather(BaseModel):
    city: str = Field(max_length=20)
    condition: Literal["sunny", "rainy", "cloudy", "snowy"]
    temperature_c: float


class Item(BaseModel):
    name: str = Field(max_length=20)
    quantity: int


class Order(BaseModel):
    items: list[Item] = Field(max_length=3)
    total: float
    paid: bool


class Review(BaseModel):
    rating: Literal[1, 2, 3, 4, 5]
    summary: str = Field(max_length=60)
    recommend: bool


class Address(BaseModel):
    street: str = Field(max_length=30)
    city: str = Field(max_length=20)


class Company(BaseModel):
    name: str = Field(max_length=30)
    address: Address
    employees: int
    ceo: Optional[Person]


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


class Event(BaseModel):
    name: str = Field(max_length=30)
    attendees: list[str] = Field(max_length=4)
    location: Optional[str] = Field(max_length=20)


STRUCTURED_CASES = [
    (Person, "Invent a person and give their name and age."),
    (Person, "Who wrote Hamlet? Give the name and the age at death."),
    (Recipe, "Give me a recipe for pancakes."),
    (Recipe, "How do I make a tomato salad?"),
    (Weather, "What is the weather like in Paris today?"),
    (Weather, "Describe a winter day in Oslo."),
    (Order, "I bought two apples and a loaf of bread for 4.50 and paid cash."),
    (Order, "Create an order for three notebooks."),
    (Review, "Review the movie Jaws."),
    (Review, "Write a short review of a cheap hotel."),
    (Company, "Describe a small bakery company."),
    (Company, "Describe Apple Inc."),
    (Sentiment, "Classify the sentiment: I love this phone!"),
    (Sentiment, "Classify the sentiment: the food was cold and late."),
    (Event, "Plan a birthday party."),
    (Event, "Describe a team meeting on Monday."),
    (Person, "Describe the oldest person you know."),
    (Weather, "Report the weather in Cairo in summer."),
    (Review, "Rate a pizza restaurant."),
    (Event, "Describe a wedding."),
]


def structured_parse(client: OpenAI, model: str) -> dict:
    """20 prompt/schema pairs through `beta.chat.completions.parse` at temperature 0.8."""
    outcomes = []
    for i, (schema, prompt) in enumerate(STRUCTURED_CASES):
        messages = [{"role": "system", "content": "Answer with JSON."}, {"role": "user", "content": prompt}]
        try:
            completion = client.beta.chat.completions.parse(
                model=model, messages=messages, response_format=schema, temperature=0.8, seed=100 + i,
                max_tokens=300)
        except openai.LengthFinishReasonError:
            outcomes.append({"schema": schema.__name__, "finish_reason": "length", "valid": False})
            continue
        except ValidationError as error:
            outcomes.append({"schema": schema.__name__, "finish_reason": "stop", "valid": False, "error": str(error)})
            continue
        message = completion.choices[0].message
        parsed = message.parsed
        outcomes.append({
            "schema": schema.__name__, "finish_reason": completion.choices[0].finish_reason,
            "valid": isinstance(parsed, schema), "content": message.content,
        })
    return {"outcomes": outcomes}


def structured_stream(client: OpenAI, model: str) -> dict:
    """A streamed json_schema chat: the concatenated deltas validate."""
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Describe a small bakery company."}],
        response_format={"type": "json_schema", "json_schema": {
            "name": "Company", "schema": to_strict_json_schema(Company), "strict": True}},
        temperature=0.8, seed=3, max_tokens=300, stream=True)
    content, finish = "", None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    try:
        Company.model_validate_json(content)
        valid = True
    except ValidationError:
        valid = False
    return {"content": content, "finish_reason": finish, "valid": valid}


def json_object(client: OpenAI, model: str) -> dict:
    """json_object mode on chat (5 prompts) and on completions: always a JSON object when it stops."""
    outcomes = []
    prompts = ["List three fruits.", "Who are you?", "Tell me a joke.", "What is 2+2?", "Describe the sea."]
    for i, prompt in enumerate(prompts):
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], response_format={"type": "json_object"},
            temperature=0.9, seed=i, max_tokens=200)
        outcomes.append((response.choices[0].finish_reason, response.choices[0].message.content))
    response = client.completions.create(
        model=model, prompt="A JSON object describing a cat:", max_tokens=200, temperature=0.9, seed=1,
        extra_body={"response_format": {"type": "json_object"}})
    outcomes.append((response.choices[0].finish_reason, response.choices[0].text))
    results = []
    for finish, text in outcomes:
        try:
            is_object = isinstance(json.loads(text), dict)
        except ValueError:
            is_object = False
        results.append({"finish_reason": finish, "is_object": is_object, "text": text})
    return {"outcomes": results}


def unsupported_schema(client: OpenAI, model: str) -> dict:
    client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
            "required": ["code"], "additionalProperties": False}}})
    return {"exception": None}


def logit_bias(client: OpenAI, model: str) -> dict:
    """+100 on one token makes every sampled token that one, even at temperature 1."""
    response = client.completions.create(
        model=model, prompt=COMPLETION_PROMPT, max_tokens=5, temperature=1, seed=3, logit_bias={"1326": 100},
        logprobs=1)
    return {"text": response.choices[0].text, "tokens": response.choices[0].logprobs.tokens}


def bad_logit_bias(client: OpenAI, model: str) -> dict:
    results = {}
    for name, bias in [("not_an_id", {"abc": 1}), ("out_of_range", {"5": 500}), ("unknown_token", {"99999999": 1})]:
        try:
            client.chat.completions.create(model=model, messages=CHAT_MESSAGES, max_tokens=4, logit_bias=bias)
            results[name] = {"exception": None}
        except openai.APIStatusError as error:
            results[name] = error_result(error)
    return results


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time in a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}},
}
TOOL_QUESTION = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def tool_exchange(client: OpenAI, model: str, stream: bool) -> dict:
    """Two turns: the model must call get_weather (a named tool_choice), the call is parsed from
    `tool_calls`, the tool's result goes back as a `tool` message, and the model answers in text."""
    first = {"model": model, "messages": TOOL_QUESTION, "tools": [WEATHER_TOOL, TIME_TOOL],
             "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
             "max_tokens": 64, "temperature": 0.7, "seed": 3}
    if stream:
        # As apps do: tool-call deltas accumulated by index (id and name once, arguments in pieces).
        calls: dict[int, dict] = {}
        finish = None
        for chunk in client.chat.completions.create(stream=True, **first):
            for part in chunk.choices:
                for delta in part.delta.tool_calls or []:
                    entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                    if delta.id:
                        entry["id"] = delta.id
                    if delta.function and delta.function.name:
                        entry["name"] += delta.function.name
                    if delta.function and delta.function.arguments:
                        entry["arguments"] += delta.function.arguments
                if part.finish_reason:
                    finish = part.finish_reason
        parsed = [calls[index] for index in sorted(calls)]
    else:
        response = client.chat.completions.create(**first)
        choice = response.choices[0]
        finish = choice.finish_reason
        parsed = [{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
                  for call in (choice.message.tool_calls or [])]
    outcome = {"finish_reason": finish, "calls": parsed}
    if not parsed:
        return outcome
    call = parsed[0]
    try:
        arguments = json.loads(call["arguments"])
        outcome["arguments"] = arguments
        outcome["arguments_valid"] = (isinstance(arguments, dict) and set(arguments) == {"city", "unit"}
                                      and isinstance(arguments["city"], str)
                                      and arguments["unit"] in ("celsius", "fahrenheit"))
    except json.JSONDecodeError:
        outcome["arguments_valid"] = False
    messages = TOOL_QUESTION + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call["id"], "type": "function",
                         "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"temperature": 18, "sky": "clear"})},
    ]
    second = {"model": model, "messages": messages, "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "none",
              "max_tokens": 32, "temperature": 0, "seed": 3}
    if stream:
        text = ""
        for chunk in client.chat.completions.create(stream=True, **second):
            for part in chunk.choices:
                text += part.delta.content or ""
                if part.finish_reason:
                    outcome["final_finish_reason"] = part.finish_reason
        outcome["answer"] = text
    else:
        answer = client.chat.completions.create(**second)
        outcome["answer"] = answer.choices[0].message.content
        outcome["final_finish_reason"] = answer.choices[0].finish_reason
    return outcome


def tools_unstreamed(client: OpenAI, model: str) -> dict:
    return tool_exchange(client, model, stream=False)


def tools_streamed(client: OpenAI, model: str) -> dict:
    return tool_exchange(client, model, stream=True)


def tools_required(client: OpenAI, model: str) -> dict:
    """tool_choice "required" with two tools: five calls, each naming one of them with valid arguments."""
    outcomes = []
    for seed in range(5):
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
            tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", max_tokens=64, temperature=0.9, seed=seed)
        choice = response.choices[0]
        calls = choice.message.tool_calls or []
        outcomes.append({"finish_reason": choice.finish_reason,
                         "names": [call.function.name for call in calls],
                         "arguments": [call.function.arguments for call in calls]})
    return {"outcomes": outcomes}


def bad_tool_choice(client: OpenAI, model: str) -> dict:
    """A tool_choice naming a function that is not among the tools, and tool_choice without tools."""
    results = {}
    for name, kwargs in {
        "unknown_name": {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "no_tools": {"tool_choice": "required"},
        "bad_tool": {"tools": [{"type": "function", "function": {"description": "no name"}}]},
    }.items():
        try:
            client.chat.completions.create(model=model, messages=TOOL_QUESTION, max_tokens=4, **kwargs)
            results[name] = {"status": 200}
        except openai.APIStatusError as error:
            results[name] = error_result(error)
    return results


SCENARIOS = {
    name: function for name, function in globals().items()
    if callable(function) and name in {
        "completion", "completion_stream", "chat", "chat_stream", "chat_logprobs", "completion_n",
        "completion_echo", "completion_echo_stream", "moderation", "models", "bad_temperature",
        "unknown_model", "unknown_route", "auth", "rate_limit",
        "admin_status", "deadline", "structured_parse", "structured_stream", "json_object",
        "unsupported_schema", "logit_bias", "bad_logit_bias", "tools_unstreamed", "tools_streamed",
        "tools_required", "bad_tool_choice",
    }
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--model", default="alignd")
    parser.add_argument("scenarios", nargs="+", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    # No automatic retries: a 429 or 503 must reach the test as it was answered.
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    results = {}
    for name in args.scenarios:
        try:
            results[name] = SCENARIOS[name](client, args.model)
        except openai.APIStatusError as error:
            results[name] = error_result(error)
        except openai.APIError as error:  # e.g. an error event inside a stream
            results[name] = {"exception": type(error).__name__, "status": None, "body": error.body}
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
