"""The official OpenAI Python SDK against a published app's endpoint (`base_url` =
`.../v1/apps/{id}`): a completion with its citations, a stream (the citations event is skipped by
the SDK), and the SDK's error for another app. Run by the Rust test
`apps::an_app_over_a_knowledge_base_answers_with_citations_through_a_deployment`, which passes
`APP_BASE_URL` and `APP_KEY`. Prints a JSON report on stdout."""

import json
import os
import sys

import openai

base = os.environ["APP_BASE_URL"]
client = openai.OpenAI(base_url=base, api_key=os.environ["APP_KEY"], max_retries=0)
question = [{"role": "user", "content": "What is the password of the office wifi?"}]
extra = {"variables": {"team": "ops"}}


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


completion = client.chat.completions.create(model="ignored", messages=question, extra_body=extra, user="sdk-user")
check(completion.choices[0].message.content, f"an answer: {completion}")
citations = (completion.model_extra or {}).get("citations") or []
check(citations, f"citations in the answer: {completion}")

stream = client.chat.completions.create(model="ignored", messages=question, extra_body=extra, stream=True,
                                        stream_options={"include_usage": True})
text = ""
stream_citations = []
usage = None
for chunk in stream:
    # Code written for OpenAI's streams (empty choices on the usage chunk) runs unchanged.
    stream_citations += (chunk.model_extra or {}).get("citations") or []
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        text += choice.delta.content or ""
check(usage is not None and usage.completion_tokens > 0, "the stream's usage chunk")

other = openai.OpenAI(base_url=base.rsplit("/", 1)[0] + "/00000000-0000-7000-8000-000000000000",
                      api_key=os.environ["APP_KEY"], max_retries=0)
code = None
try:
    other.chat.completions.create(model="ignored", messages=question)
except openai.NotFoundError as err:
    code = err.code

print(json.dumps({"citation": citations[0]["file_name"], "stream_text": text,
                  "stream_citation": stream_citations[0]["file_name"] if stream_citations else None, "not_found": code}))
