"""`train serve` through the real clients: boto3's bedrock-runtime (converse, converse_stream) and openai
(plain and streamed), against the CLI running in a subprocess (see conftest)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path

import boto3
import botocore.exceptions
import openai
import pytest
from botocore.eventstream import EventStreamBuffer
from tests.serve.conftest import API_KEY, B_ID, CONTEXT, SYSTEM, Runs, Served

from tunekit_cli.train import main
from tunekit_train.serve import eventstream

PROMPT = "What is the opposite of wet?"
MAX_TOKENS = 12


def bedrock(url: str, *, key: str = API_KEY):
    """A bedrock-runtime client signing with SigV4, the API key as its secret (boto3 sends bearer tokens over HTTPS only)."""
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="dummy",
        aws_secret_access_key=key,
    )


def oai(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def generated(path: Path, capsys: pytest.CaptureFixture[str], prompt: str = PROMPT) -> str:
    """What `train generate --greedy` answers."""
    args = [
        "generate",
        str(path),
        "--greedy",
        "--system",
        SYSTEM,
        "--prompt",
        prompt,
        "--max-new-tokens",
        str(MAX_TOKENS),
        "--json",
    ]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)["completions"][0]["text"]


def converse_args(model_id: str, prompt: str = PROMPT, **config: object) -> dict:
    return {
        "modelId": model_id,
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "system": [{"text": SYSTEM}],
        "inferenceConfig": {"maxTokens": MAX_TOKENS, "temperature": 0, **config},
    }


def chat(client: openai.OpenAI, model_id: str, prompt: str = PROMPT, **kwargs: object):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    return client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=MAX_TOKENS, temperature=0, **kwargs
    )


def test_eventstream_frames_decode_with_botocore() -> None:
    frames = eventstream.event(
        "contentBlockDelta", {"delta": {"text": "héllo"}, "contentBlockIndex": 0}
    ) + eventstream.exception("validationException", "bad")
    buffer = EventStreamBuffer()
    buffer.add_data(frames)
    first, second = list(buffer)  # the decoder checks both CRCs and every length
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"delta": {"text": "héllo"}, "contentBlockIndex": 0}
    assert second.headers[":exception-type"] == "validationException" and json.loads(second.payload) == {
        "message": "bad"
    }


def test_bedrock_converse_and_stream_equal_train_generate(served: Served, runs: Runs, capsys) -> None:
    expected = generated(runs.a, capsys)
    assert expected  # a one-step adapter on a random base: random tokens, not an immediate end
    client = bedrock(served.url)
    answer = client.converse(**converse_args("run-a"))
    assert answer["output"]["message"] == {"role": "assistant", "content": [{"text": expected}]}
    assert answer["stopReason"] in {"max_tokens", "end_turn"}
    usage = answer["usage"]
    assert (
        0 < usage["outputTokens"] <= MAX_TOKENS
        and usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    )
    assert answer["metrics"]["latencyMs"] >= 0

    events = list(client.converse_stream(**converse_args("run-a"))["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) <= {"contentBlockDelta"}
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:-3]) == expected
    assert events[-2]["messageStop"]["stopReason"] == answer["stopReason"]
    assert events[-1]["metadata"]["usage"] == usage


def test_bedrock_stop_sequence_cuts_the_answer(served: Served, runs: Runs, capsys) -> None:
    expected = generated(runs.a, capsys)
    stop = expected[len(expected) // 2 : len(expected) // 2 + 2]
    client = bedrock(served.url)
    answer = client.converse(**converse_args("run-a", stopSequences=[stop]))
    assert answer["stopReason"] == "stop_sequence"
    assert answer["output"]["message"]["content"][0]["text"] == expected[: expected.index(stop)]
    streamed = list(client.converse_stream(**converse_args("run-a", stopSequences=[stop]))["stream"])
    assert (
        "".join(e["contentBlockDelta"]["delta"]["text"] for e in streamed if "contentBlockDelta" in e)
        == expected[: expected.index(stop)]
    )


def test_openai_chat_and_stream_equal_train_generate(served: Served, runs: Runs, capsys) -> None:
    expected = generated(runs.a, capsys)
    client = oai(served.url)
    answer = chat(client, "run-a")
    assert answer.object == "chat.completion" and answer.model == "run-a"
    assert answer.choices[0].message.content == expected and answer.choices[0].finish_reason in {
        "stop",
        "length",
    }
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    chunks = list(chat(client, "run-a", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    assert [m.id for m in client.models.list()] == ["run-a", B_ID]


def test_two_adapters_on_one_base_answer_by_model_id(served: Served, runs: Runs, capsys) -> None:
    assert len({m["base"] for m in served.info["models"]}) == 1  # one base, loaded once, two adapters on it
    client = oai(served.url)
    a, b = chat(client, "run-a").choices[0].message.content, chat(client, B_ID).choices[0].message.content
    assert a != b
    assert (a, b) == (generated(runs.a, capsys), generated(runs.b, capsys))
    assert chat(client, "run-a").choices[0].message.content == a  # switching back gives A's adapter again


def test_concurrent_requests_are_batched(served: Served) -> None:
    client = oai(served.url)
    prompts = [f"Question {i}: {'why ' * i}?" for i in range(8)]
    alone = {p: chat(client, "run-a", p).choices[0].message.content for p in prompts[:2]}
    before = health(served.url)["batches"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda p: chat(client, "run-a" if prompts.index(p) % 2 else B_ID, p), prompts)
        )
    assert all(a.choices[0].finish_reason in {"stop", "length"} for a in answers)
    stats = health(served.url)
    assert stats["requests"] >= 10 and stats["batches"] < before + 8
    assert stats["max_batch_size"] > 1
    # left padding in a batch does not change a greedy answer
    assert (
        answers[1].choices[0].message.content == chat(client, "run-a", prompts[1]).choices[0].message.content
    )
    assert alone[prompts[1]] == answers[1].choices[0].message.content


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
        return json.loads(response.read())


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Message, dict]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def bedrock_error(call) -> tuple[int, str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_bad_bedrock_requests_get_bedrock_errors(served: Served) -> None:
    client = bedrock(served.url)
    assert bedrock_error(lambda: client.converse(**converse_args("nope")))[:2] == (
        404,
        "ResourceNotFoundException",
    )
    status, code, message = bedrock_error(lambda: client.converse(**converse_args("run-a", temperature=1.5)))
    assert (status, code) == (400, "ValidationException") and "inferenceConfig.temperature" in message
    status, code, message = bedrock_error(lambda: client.converse(**converse_args("run-a", maxTokens=65)))
    assert (status, code) == (400, "ValidationException") and "limit of 64" in message
    long_prompt = "word " * CONTEXT
    status, code, message = bedrock_error(
        lambda: client.converse_stream(**converse_args("run-a", long_prompt, maxTokens=8))
    )
    assert (status, code) == (400, "ValidationException") and "context is 256 tokens" in message
    image = {
        "modelId": "run-a",
        "messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b"x"}}}]}],
    }
    status, code, message = bedrock_error(lambda: client.converse(**image))
    assert (status, code) == (400, "ValidationException") and "only text content blocks" in message
    wrong = bedrock(
        served.url, key="dummy"
    )  # dummy credentials: a valid signature, but not made with the key
    assert bedrock_error(lambda: wrong.converse(**converse_args("run-a")))[:2] == (
        403,
        "AccessDeniedException",
    )
    status, headers, _ = raw_post(
        f"{served.url}/model/run-a/converse", b"{}", {"Authorization": "Bearer wrong"}
    )
    assert status == 403 and headers["x-amzn-ErrorType"] == "AccessDeniedException"

    url, auth = f"{served.url}/model/run-a/converse", {"Authorization": f"Bearer {API_KEY}"}
    status, headers, body = raw_post(url, b"{not json", auth)
    assert (
        status == 400
        and headers["x-amzn-ErrorType"] == "ValidationException"
        and "not valid JSON" in body["message"]
    )
    status, headers, body = raw_post(
        url, json.dumps({"messages": [{"role": "user", "content": [{"text": "x" * 5000}]}]}).encode(), auth
    )
    assert (
        status == 413
        and headers["x-amzn-ErrorType"] == "ValidationException"
        and "4096 bytes" in body["message"]
    )
    assert client.converse(**converse_args("run-a"))["stopReason"]  # still serving


def test_bad_openai_requests_get_openai_errors(served: Served) -> None:
    client = oai(served.url)
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, "nope")
    assert (
        caught.value.body["code"] == "model_not_found"
        and caught.value.body["type"] == "invalid_request_error"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="run-a", messages=[{"role": "bot", "content": "hi"}])
    assert caught.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "run-a", n=2)
    assert caught.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError, match="context is 256 tokens"):
        chat(client, "run-a", "word " * CONTEXT, stream=True)
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(oai(served.url, key="wrong"), "run-a")
    assert caught.value.body["code"] == "invalid_api_key"
    status, _, body = raw_post(
        f"{served.url}/v1/chat/completions", b"[", {"Authorization": f"Bearer {API_KEY}"}
    )
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    assert chat(client, "run-a").choices[0].message.content  # still serving
    assert health(served.url)["status"] == "ok"
