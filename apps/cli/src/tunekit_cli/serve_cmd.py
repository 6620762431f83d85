"""`train serve`: trained models behind the Bedrock Converse API and the OpenAI chat API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from tunekit_cli.console import out

if TYPE_CHECKING:
    from tunekit_train.serve.app import Server


def serve(
    models: Annotated[list[str], typer.Argument(help="run, checkpoint or export directories or registered models, each PATH, models:/NAME/VERSION or ID=either (default id: the run's directory name, or NAME)")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 exposes the server to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: a free one, printed at startup)")] = 8080,
    engine: Annotated[str, typer.Option(help="transformers (CPU or GPU, batched) | vllm (GPU, needs vLLM)")] = "transformers",
    api_key: Annotated[str | None, typer.Option(envvar="TUNEKIT_SERVE_API_KEY", help="require Authorization: Bearer KEY on every call")] = None,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="largest maxTokens / max_tokens a request may ask for")] = 4096,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="largest request body")] = 4 * 1024 * 1024,
    max_batch: Annotated[int, typer.Option(min=1, help="requests decoded together")] = 32,
    device: Annotated[str | None, typer.Option(help="torch device for the transformers engine (default: cuda if available, else cpu)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow server or store of models:/ arguments")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object (address, model ids) once serving")] = False,
) -> int:
    """Serve MODELS: POST /model/{id}/converse[-stream] (Bedrock), /v1/chat/completions, GET /v1/models, /health.

    LoRA adapters of one base load once and are chosen per request by model id; Ctrl-C stops.
    """
    from tunekit_cli.train import _before_torch

    _before_torch()
    from tunekit_train.serve.app import ServeSettings, prepare, run

    settings = ServeSettings(
        api_key=api_key, max_tokens_limit=max_tokens_limit, max_body_bytes=max_body_bytes
    )
    server, sock = prepare(
        models,
        host=host,
        port=port,
        engine=engine,
        settings=settings,
        max_batch=max_batch,
        device=device,
        tracking_uri=tracking_uri,
    )
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    if json_output:
        _print_json(server, url, bound_host, bound_port, engine)
    else:
        _print_serving(server, url, engine, api_key=api_key is not None)
    run(server, sock)
    return 0


def _print_json(server: Server, url: str, host: str, port: int, engine: str) -> None:
    """The ``--json`` line: the address and the models served."""
    listed = [
        {"id": m.model_id, "path": str(m.directory), "base": None if m.base is None else str(m.base)}
        for m in server.models.values()
    ]
    print(json.dumps({"url": url, "host": host, "port": port, "engine": engine, "models": listed}), flush=True)


def _print_serving(server: Server, url: str, engine: str, *, api_key: bool) -> None:
    """Where the server listens, its models, and how boto3 and the OpenAI client reach it."""
    out.print(f"serving on [bold]{url}[/bold] ({engine} engine{', API key required' if api_key else ''})")
    for model in server.models.values():
        kind = f"adapter on {model.base}" if model.base else "model"
        out.print(f"  {model.model_id}: {kind} {model.directory}")
    out.print(f"  Bedrock: boto3.client('bedrock-runtime', endpoint_url='{url}').converse(modelId=ID, ...)")
    out.print(f"  OpenAI:  OpenAI(base_url='{url}/v1', api_key=...).chat.completions.create(model=ID, ...)")
