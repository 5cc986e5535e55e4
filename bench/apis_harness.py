"""Patch a copy of the side-by-side harness for bench/apis.sh: the upstream also serves the Responses API and Anthropic
Messages streams of bench/sse/ (beside the harness's chat stream), and
bench.py gains the scenario kinds `responses` and `messages` that ask for
them. Usage: apis_harness.py COPY_DIR SSE_DIR"""
import shutil
import sys

copy, sse = sys.argv[1], sys.argv[2]

for name in ("responses.sse", "messages.sse"):
    shutil.copy(f"{sse}/{name}", f"{copy}/responses/{name}")

path = f"{copy}/upstream.nginx.conf.tmpl"
text = open(path).read()
anchor = """        location = /sse/v1/chat/completions {"""
extra = """        location = /sse/v1/responses {
            default_type text/event-stream;
            try_files /responses.sse =404;
        }

        location = /sse/v1/messages {
            default_type text/event-stream;
            try_files /messages.sse =404;
        }

"""
if anchor not in text:
    sys.exit("apis_harness.py: upstream.nginx.conf.tmpl changed; update the patch")
open(path, "w").write(text.replace(anchor, extra + anchor))

path = f"{copy}/bench.py"
text = open(path).read()
old_requests = """    "sse": {"path": "/sse/v1/chat/completions", "model": "bench-model", "stream": True},
}"""
new_requests = """    "sse": {"path": "/sse/v1/chat/completions", "model": "bench-model", "stream": True},
    "responses": {"path": "/sse/v1/responses", "model": "bench-model", "stream": True, "expect": "event: response.completed"},
    "messages": {"path": "/sse/v1/messages", "model": "bench-model", "stream": True, "expect": "event: message_stop"},
}"""
old_expect = """    expected = "data: [DONE]" if req["stream"] else "chat.completion\""""
new_expect = """    expected = req.get("expect") or ("data: [DONE]" if req["stream"] else "chat.completion")"""
for old in (old_requests, old_expect):
    if old not in text:
        sys.exit("apis_harness.py: bench.py changed; update the patch")
text = text.replace(old_requests, new_requests).replace(old_expect, new_expect)
open(path, "w").write(text)
