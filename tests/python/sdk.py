"""The official OpenAI and Anthropic Python SDKs as cutover's clients.

Run by tests/sdk.rs with the venv's interpreter. Each command prints one
JSON document on stdout; any SDK error is a non-zero exit with the
traceback on stderr.

    sdk.py stream chat|responses|messages BASE_URL PROMPT
        stream one answer with the SDK's stream helper and print the text
        and the usage the SDK read: {"text", "input", "output"}
    sdk.py answer chat|responses|messages BASE_URL PROMPT
        the same, unstreamed
    sdk.py refusal chat|responses|messages BASE_URL
        ask once unstreamed and once streamed, and print both texts as the
        SDK sees them: {"json": TEXT, "stream": TEXT}

    sdk.py batch JOBS_JSON
        run several of the above in one process (the SDKs take seconds to
        import): JOBS_JSON is a list of argument lists, the answer a list
        of their documents, in order

BASE_URL is what the SDK is given: for OpenAI it ends in /v1 (the SDK
appends /chat/completions or /responses), for Anthropic it does not (the
SDK appends /v1/messages).
"""

import json
import sys

import anthropic
import openai

MODEL = "sdk-test-model"
# The SDKs retry failures; a test wants to see the first answer.
RETRIES = 0


def openai_client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=RETRIES)


def anthropic_client(base_url):
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=RETRIES)


def chat(base_url, prompt, stream):
    client = openai_client(base_url)
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        done = client.chat.completions.create(model=MODEL, messages=messages)
        usage = done.usage
        return done.choices[0].message.content, usage.prompt_tokens, usage.completion_tokens
    text, usage = "", None
    chunks = client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is None:
        return text, None, None
    return text, usage.prompt_tokens, usage.completion_tokens


def responses(base_url, prompt, stream):
    client = openai_client(base_url)
    if not stream:
        done = client.responses.create(model=MODEL, input=prompt)
    else:
        deltas = ""
        with client.responses.stream(model=MODEL, input=prompt) as events:
            for event in events:
                if event.type == "response.output_text.delta":
                    deltas += event.delta
            done = events.get_final_response()
        if deltas != done.output_text:
            raise SystemExit(f"deltas {deltas!r} != final output_text {done.output_text!r}")
    usage = done.usage
    return done.output_text, usage.input_tokens, usage.output_tokens


def messages(base_url, prompt, stream):
    client = anthropic_client(base_url)
    request = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}
    if not stream:
        done = client.messages.create(**request)
    else:
        with client.messages.stream(**request) as events:
            deltas = "".join(events.text_stream)
            done = events.get_final_message()
        if deltas != done.content[0].text:
            raise SystemExit(f"deltas {deltas!r} != final text {done.content[0].text!r}")
    return done.content[0].text, done.usage.input_tokens, done.usage.output_tokens


APIS = {"chat": chat, "responses": responses, "messages": messages}


def run(args):
    command, api, base_url = args[0], args[1], args[2]
    call = APIS[api]
    if command in ("stream", "answer"):
        text, tokens_in, tokens_out = call(base_url, args[3], command == "stream")
        return {"text": text, "input": tokens_in, "output": tokens_out}
    if command == "refusal":
        plain = call(base_url, "are you there?", False)[0]
        streamed = call(base_url, "are you there?", True)[0]
        return {"json": plain, "stream": streamed}
    raise SystemExit(f"unknown command {command!r}")


def main(argv):
    if argv[1] == "batch":
        print(json.dumps([run(job) for job in json.loads(argv[2])]))
    else:
        print(json.dumps(run(argv[1:])))


if __name__ == "__main__":
    main(sys.argv)
