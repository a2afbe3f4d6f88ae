"""The official OpenAI and Anthropic SDKs against llmtap-sim: one plain and
one streamed call each. Prints one JSON object: per call, the text, the
model and the usage the SDK reports. Usage: sim_sdk.py BASE_URL"""

import json
import sys

import anthropic
import openai

BASE = sys.argv[1]
# 4 chunks (= completion tokens), 20 bytes of text: "The quick brown fox ".
SIM = {"x-sim-chunks": "4", "x-sim-body-bytes": "20"}
ASK = [{"role": "user", "content": "Say something about a fox."}]


def openai_calls():
    client = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-sim", max_retries=0, timeout=30)
    r = client.chat.completions.create(model="gpt-sim-1", messages=ASK, extra_headers=SIM)
    plain = {
        "text": r.choices[0].message.content,
        "model": r.model,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "total_tokens": r.usage.total_tokens,
    }
    text, usage, model = "", None, None
    stream = client.chat.completions.create(
        model="gpt-sim-2",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=SIM,
    )
    for chunk in stream:
        model = chunk.model
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    streamed = {
        "text": text,
        "model": model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    return plain, streamed


def anthropic_calls():
    client = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-sim", max_retries=0, timeout=30)
    m = client.messages.create(model="claude-sim-1", max_tokens=100, messages=ASK, extra_headers=SIM)
    plain = {
        "text": m.content[0].text,
        "model": m.model,
        "input_tokens": m.usage.input_tokens,
        "output_tokens": m.usage.output_tokens,
    }
    with client.messages.stream(
        model="claude-sim-2", max_tokens=100, messages=ASK, extra_headers=SIM
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    streamed = {
        "text": text,
        "model": final.model,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    }
    return plain, streamed


o_plain, o_stream = openai_calls()
a_plain, a_stream = anthropic_calls()
print(json.dumps({
    "openai_plain": o_plain,
    "openai_stream": o_stream,
    "anthropic_plain": a_plain,
    "anthropic_stream": a_stream,
}))
