"""The baseline for the HTTP benchmark: a FastAPI endpoint that only parses the same body and echoes it."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/v1/checks")
async def echo(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return Response(orjson.dumps(body), media_type="application/json")
