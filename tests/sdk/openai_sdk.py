"""The official OpenAI Python SDK against the gateway: models, chat (stream and not),
embeddings, and errors. Run by the Rust test `sdk::openai_python_sdk_works_against_the_gateway`,
which starts the platform and a fake upstream and passes their coordinates in the environment."""

import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["MAAS_BASE_URL"] + "/v1", api_key=os.environ["MAAS_API_KEY"], max_retries=0)


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


models = [m.id for m in client.models.list()]
check("tiny" in models, f"models lists tiny: {models}")

reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
check(reply.choices[0].message.content == "hello there", f"chat content: {reply}")
check(reply.usage.total_tokens == 10, f"chat usage: {reply.usage}")

pieces = []
for chunk in client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True):
    check(chunk.usage is None, "usage chunk stripped when not asked for")
    for choice in chunk.choices:
        pieces.append(choice.delta.content or "")
check("".join(pieces) == "tok0 tok1 tok2 ", f"streamed text: {pieces}")

usage = None
for chunk in client.chat.completions.create(
    model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
):
    if chunk.usage is not None:
        usage = chunk.usage
check(usage is not None and usage.completion_tokens == 3, f"stream usage: {usage}")

embedding = client.embeddings.create(model="tiny", input="hello")
check(len(embedding.data[0].embedding) == 3, f"embedding: {embedding}")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    check(False, "unknown model must fail")
except openai.NotFoundError as err:
    check(err.code == "model_not_found", f"error code: {err.code}")

try:
    openai.OpenAI(base_url=os.environ["MAAS_BASE_URL"] + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    check(False, "a wrong key must fail")
except openai.AuthenticationError as err:
    check(err.code == "invalid_token", f"auth error code: {err.code}")

print("openai sdk: all checks passed")
