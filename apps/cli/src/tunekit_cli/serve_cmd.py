"""`train serve`: trained models behind the Bedrock Converse API and the OpenAI chat API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from tunekit_cli.console import out
from tunekit_cli.options import given
from tunekit_cli.torch_env import before_torch

if TYPE_CHECKING:
    from tunekit_train.serve import Server


def serve(
    models: Annotated[list[str], typer.Argument(help="run, checkpoint or export directories or registered models, each PATH, models:/NAME/VERSION or ID=either (default id: the run's directory name, or NAME)")],
    host: Annotated[str | None, typer.Option(help="address to listen on (0.0.0.0 exposes the server to the network; default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (0: a free one, printed at startup; default 8080)")] = None,
    engine: Annotated[str | None, typer.Option(help="transformers (CPU or GPU, batched) | vllm (GPU, needs vLLM) (default transformers)")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TUNEKIT_SERVE_API_KEY", help="require Authorization: Bearer KEY on every call")] = None,
    max_tokens_limit: Annotated[int | None, typer.Option(help="largest maxTokens / max_tokens a request may ask for (default 4096)")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="largest request body in bytes (default 4194304)")] = None,
    max_batch: Annotated[int | None, typer.Option(help="requests decoded together (default 32)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device for the transformers engine (default: cuda if available, else cpu)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow server or store of models:/ arguments")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object (address, model ids) once serving")] = False,
) -> int:
    """Serve MODELS: POST /model/{id}/converse[-stream] (Bedrock), /v1/chat/completions, GET /v1/models, /health.

    LoRA adapters of one base load once and are chosen per request by model id; Ctrl-C stops.
    """
    before_torch()
    from tunekit_train.serve import ServeOptions, ServeSettings, prepare, run

    # Only the options given: `ServeOptions` and `ServeSettings` own every default (tunekit_cli.options).
    options = ServeOptions(**given(host=host, port=port, engine=engine, max_batch=max_batch, device=device, tracking_uri=tracking_uri))  # type: ignore[arg-type]
    settings = ServeSettings(**given(api_key=api_key, max_tokens_limit=max_tokens_limit, max_body_bytes=max_body_bytes))  # type: ignore[arg-type]
    server, sock = prepare(models, options, settings)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    if json_output:
        _print_json(server, url, bound_host, bound_port, options.engine)
    else:
        _print_serving(server, url, options.engine, api_key=api_key is not None)
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
