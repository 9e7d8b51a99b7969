"""The official OpenAI Python SDK against the platform's files and vector stores: upload, attach
(one, polled; a batch, polled), list with paging, attributes, filters, search, content, update,
delete, and errors. Run by the Rust test `knowledge::openai_sdk_drives_files_and_vector_stores`,
which starts the platform, a worker and the built-in embedding engine and passes their
coordinates in the environment."""

import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["MAAS_BASE_URL"] + "/v1", api_key=os.environ["MAAS_API_KEY"], max_retries=0)


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


ALPHA = b"The Contoso lighthouse keeper logs the tide every evening at the harbour."
BETA = b"# Recipes\n\nA French onion soup simmers for two hours with butter and thyme."
GAMMA = b"Quarterly revenue of the Fabrikam bakery grew by thirty percent in spring."
DELTA = "\u6708\u4eae\u7167\u4eae\u4e86\u5c71\u8c37\u91cc\u7684\u5c0f\u6751\u5e84\u3002".encode()

# Files.
alpha = client.files.create(file=("alpha.txt", ALPHA, "text/plain"), purpose="assistants")
check(alpha.id.startswith("file-") and alpha.object == "file", f"file id: {alpha}")
check(alpha.bytes == len(ALPHA) and alpha.filename == "alpha.txt" and alpha.purpose == "assistants", f"file: {alpha}")
check(client.files.retrieve(alpha.id).id == alpha.id, "retrieve a file")
check(client.files.content(alpha.id).read() == ALPHA, "a file's content is its bytes")
check(alpha.id in [f.id for f in client.files.list(purpose="assistants")], "files list holds the upload")

try:
    client.files.create(file=("x.txt", b"hello", "text/plain"), purpose="fine-tune")
    check(False, "an unsupported purpose must fail")
except openai.UnprocessableEntityError as err:
    check(err.code == "validation_failed", f"purpose error code: {err.code}")
try:
    client.files.create(file=("x.png", b"\x89PNG\r\n\x1a\n0000", "image/png"), purpose="assistants")
    check(False, "an image must be refused")
except openai.APIStatusError as err:
    check(err.status_code == 415 and err.code == "unsupported_media_type", f"image refusal: {err.status_code} {err.code}")

# A store with static chunking and metadata.
store = client.vector_stores.create(
    name="sdk-docs",
    metadata={"team": "search"},
    chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}},
    expires_after={"anchor": "last_active_at", "days": 7},
)
check(store.id.startswith("vs_") and store.object == "vector_store", f"store: {store}")
check(store.file_counts.total == 0 and store.status == "completed", f"empty store: {store}")
check(store.metadata == {"team": "search"} and store.expires_after.days == 7 and store.expires_at is not None, f"store settings: {store}")

one = client.vector_stores.files.create_and_poll(
    vector_store_id=store.id, file_id=alpha.id, attributes={"lang": "en", "year": 2023}, poll_interval_ms=200
)
check(one.status == "completed" and one.id == alpha.id and one.vector_store_id == store.id, f"attached file: {one}")
check(one.chunking_strategy.type == "static" and one.chunking_strategy.static.max_chunk_size_tokens == 200, f"chunking: {one}")
check(one.attributes == {"lang": "en", "year": 2023}, f"attributes: {one.attributes}")
again = client.vector_stores.files.create(vector_store_id=store.id, file_id=alpha.id)
check(again.id == alpha.id and again.status == "completed", f"the same file again is the same document: {again}")

beta = client.vector_stores.files.upload_and_poll(
    vector_store_id=store.id, file=("beta.md", BETA, "text/markdown"), poll_interval_ms=200
)
check(beta.status == "completed", f"uploaded and attached: {beta}")
client.vector_stores.files.update(file_id=beta.id, vector_store_id=store.id, attributes={"lang": "fr", "year": 2024})

gamma = client.files.create(file=("gamma.txt", GAMMA, "text/plain"), purpose="assistants")
delta = client.files.create(file=("delta.txt", DELTA, "text/plain"), purpose="assistants")
batch = client.vector_stores.file_batches.create_and_poll(
    vector_store_id=store.id,
    files=[{"file_id": gamma.id, "attributes": {"lang": "en", "year": 2025}}, {"file_id": delta.id, "attributes": {"lang": "zh", "year": 2025}}],
    poll_interval_ms=200,
)
check(batch.id.startswith("vsfb_") and batch.status == "completed", f"batch: {batch}")
check(batch.file_counts.completed == 2 and batch.file_counts.total == 2, f"batch counts: {batch.file_counts}")
batch_files = sorted(f.id for f in client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id))
check(batch_files == sorted([gamma.id, delta.id]), f"batch files: {batch_files}")

store = client.vector_stores.retrieve(store.id)
check(store.file_counts.completed == 4 and store.file_counts.total == 4, f"store counts: {store.file_counts}")
check(store.usage_bytes == len(ALPHA) + len(BETA) + len(GAMMA) + len(DELTA), f"usage bytes: {store.usage_bytes}")

# Paging: two at a time, newest first, every file once.
page = client.vector_stores.files.list(vector_store_id=store.id, limit=2)
check(len(page.data) == 2 and page.has_more, f"first page: {page}")
every = [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, limit=2)]
check(sorted(every) == sorted([alpha.id, beta.id, gamma.id, delta.id]), f"auto-paging: {every}")
oldest = [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, order="asc", limit=10)]
check(oldest[0] == alpha.id, f"ascending starts with the first file: {oldest}")
check([f.id for f in client.vector_stores.files.list(vector_store_id=store.id, filter="completed")] != [], "filter by state")

# Search.
hits = client.vector_stores.search(vector_store_id=store.id, query="when does the lighthouse keeper log the tide", max_num_results=3)
check(hits.data and hits.data[0].file_id == alpha.id and hits.data[0].filename == "alpha.txt", f"search: {hits.data}")
check("lighthouse" in hits.data[0].content[0].text and 0 < hits.data[0].score <= 1, f"hit content: {hits.data[0]}")
check(hits.data[0].attributes == {"lang": "en", "year": 2023}, f"hit attributes: {hits.data[0].attributes}")
french = client.vector_stores.search(vector_store_id=store.id, query="lighthouse tide", filters={"type": "eq", "key": "lang", "value": "fr"})
check({h.file_id for h in french.data} == {beta.id}, f"eq filter: {[h.file_id for h in french.data]}")
recent = client.vector_stores.search(
    vector_store_id=store.id,
    query="revenue of the bakery",
    filters={"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2024}, {"type": "ne", "key": "lang", "value": "zh"}]},
)
check(recent.data and {h.file_id for h in recent.data} <= {beta.id, gamma.id} and recent.data[0].file_id == gamma.id, f"compound filter: {[h.file_id for h in recent.data]}")
chinese = client.vector_stores.search(vector_store_id=store.id, query="\u5c71\u8c37\u91cc\u7684\u5c0f\u6751\u5e84")
check(delta.id in [h.file_id for h in chinese.data[:2]], f"Chinese query: {[h.file_id for h in chinese.data]}")
strict = client.vector_stores.search(vector_store_id=store.id, query="lighthouse", ranking_options={"score_threshold": 1.0})
check(all(h.score >= 1.0 for h in strict.data), "score threshold")
try:
    client.vector_stores.search(vector_store_id=store.id, query="x", filters={"type": "gt", "key": "year", "value": True})
    check(False, "a boolean gt filter must fail")
except openai.UnprocessableEntityError as err:
    check(err.code == "validation_failed", f"filter error: {err.code}")

content = client.vector_stores.files.content(file_id=alpha.id, vector_store_id=store.id)
check("".join(c.text for c in content).strip() == ALPHA.decode(), f"parsed content: {list(content)}")

# Update, list, remove, delete.
store = client.vector_stores.update(vector_store_id=store.id, name="sdk-docs-2", metadata={"team": "ml"}, expires_after=None)
check(store.name == "sdk-docs-2" and store.metadata == {"team": "ml"} and store.expires_after is None, f"updated: {store}")
check(store.id in [s.id for s in client.vector_stores.list()], "stores list holds the store")
removed = client.vector_stores.files.delete(file_id=beta.id, vector_store_id=store.id)
check(removed.deleted and removed.id == beta.id, f"removed: {removed}")
check(client.files.retrieve(beta.id).id == beta.id, "a removed file stays a file")
gone = client.files.delete(gamma.id)
check(gone.deleted, f"file deleted: {gone}")
store = client.vector_stores.retrieve(store.id)
check(store.file_counts.total == 2, f"a deleted file leaves every store: {store.file_counts}")
after = client.vector_stores.search(vector_store_id=store.id, query="revenue of the bakery")
check(gamma.id not in {h.file_id for h in after.data}, "a deleted file is never found")

for call in (
    lambda: client.vector_stores.retrieve("vs_0000000000000000000000000000000a"),
    lambda: client.vector_stores.retrieve("not-a-store"),
):
    try:
        call()
        check(False, "an unknown store must fail")
    except openai.NotFoundError as err:
        check(err.code == "vector_store_not_found", f"unknown store code: {err.code}")
try:
    client.vector_stores.files.create(vector_store_id=store.id, file_id="file-0000000000000000000000000000000a")
    check(False, "an unknown file must fail")
except openai.NotFoundError as err:
    check(err.code == "file_not_found", f"unknown file code: {err.code}")

deleted = client.vector_stores.delete(store.id)
check(deleted.deleted and deleted.id == store.id, f"store deleted: {deleted}")
try:
    client.vector_stores.retrieve(store.id)
    check(False, "a deleted store must be gone")
except openai.NotFoundError:
    pass
check(client.files.retrieve(alpha.id).id == alpha.id, "files outlive their store")

print("openai vector stores: all checks passed")
