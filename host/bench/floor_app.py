"""The bare FastAPI app whose start-up time is the floor for `startup_over_floor`."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok"}
