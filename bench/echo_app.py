"""The baseline for the HTTP benchmark: a FastAPI endpoint that only parses the same body and echoes it.

It runs with the collector tuned as `guardrails serve` tunes it, so that the ratio measures the check path's
own work, not a difference in garbage-collection settings.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

from guardrails.serve import tune_gc

app = FastAPI()


@app.post("/v1/checks")
async def echo(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return Response(orjson.dumps(body), media_type="application/json")


tune_gc()
