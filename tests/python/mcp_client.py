"""The official MCP Python SDK's streamable HTTP client, driven line by line.

Run by tests/mcp.rs with the venv's interpreter: `mcp_client.py URL`. It
reads one command per line on stdin and answers each with one JSON line on
stdout, so the test can change cutover's config between two calls of one
session:

    open      open a session (initialize, notifications/initialized; the
              SDK then opens its GET event stream) and call `whoami`
    call      call `whoami` again in the session
    close     leave the session (the SDK sends DELETE)
    requests  every request the client sent: method and session header
    quit

Answers: {"event": "opened"|"called", "whoami": TEXT},
{"event": "error", "error": TEXT} when a call fails (a 404 ends the
session: "Session terminated"), {"event": "closed"},
{"event": "requests", "seen": [{"method", "session"}, ...]}.
"""

import contextlib
import json
import sys

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

seen = []


async def record(request):
    seen.append({"method": request.method, "session": request.headers.get("mcp-session-id")})


def say(**doc):
    print(json.dumps(doc), flush=True)


async def whoami(session):
    result = await session.call_tool("whoami", {})
    return result.content[0].text


async def main(url):
    stack = None
    session = None
    while True:
        line = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
        if line in ("", "quit"):
            break
        try:
            if line == "open":
                stack = contextlib.AsyncExitStack()
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        event_hooks={"request": [record]},
                        timeout=httpx2.Timeout(30, read=300),
                    )
                )
                read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                say(event="opened", whoami=await whoami(session))
            elif line == "call":
                say(event="called", whoami=await whoami(session))
            elif line == "close":
                await stack.aclose()
                stack, session = None, None
                say(event="closed")
            elif line == "requests":
                say(event="requests", seen=seen)
            else:
                say(event="error", error=f"unknown command {line!r}")
        except Exception as error:  # the test reads what failed
            say(event="error", error=f"{type(error).__name__}: {error}")
    if stack is not None:
        await stack.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
