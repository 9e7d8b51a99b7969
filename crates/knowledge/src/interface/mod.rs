//! HTTP handlers, DTOs and the context's OpenAPI document.

pub mod handlers;
pub mod openai;

use actix_web::web;

/// The OpenAPI document of this context, nested by `maas-api` under `/api/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::create_base, handlers::list_bases, handlers::get_base, handlers::update_base, handlers::delete_base,
        handlers::upload_document, handlers::list_documents, handlers::get_document, handlers::delete_document,
        handlers::document_chunks, handlers::search, handlers::reindex,
    ),
    components(schemas(
        handlers::ChunkingDto, handlers::RetrievalDto, handlers::BaseRequest, handlers::BasePatchRequest,
        handlers::BaseResponse, handlers::DocumentResponse, handlers::UploadResponse, handlers::DocumentUpload,
        handlers::ChunkResponse, handlers::ChunksResponse, handlers::SearchRequest, handlers::HitResponse,
        handlers::SearchResponse, handlers::ReindexResponse,
    )),
    tags(
        (name = "knowledge", description = "Knowledge bases: upload documents (txt, md, html, pdf, docx, csv, jsonl), which the worker extracts, chunks, embeds through the gateway (metered to the owner) and indexes; search them by vector, full text (Chinese included) or both"),
    )
)]
pub struct KnowledgeApi;

/// OpenAI's files and vector stores over knowledge bases, nested by `maas-api` under `/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        openai::create_file, openai::list_files, openai::get_file, openai::file_content, openai::delete_file,
        openai::create_store, openai::list_stores, openai::get_store, openai::update_store, openai::delete_store,
        openai::attach_file, openai::list_store_files, openai::get_store_file, openai::update_store_file,
        openai::delete_store_file, openai::store_file_content,
        openai::create_batch, openai::get_batch, openai::cancel_batch, openai::list_batch_files,
        openai::search,
    ),
    components(schemas(
        openai::FileObject, openai::FileForm, openai::Deleted, openai::ChunkingParam, openai::StaticSizes,
        openai::ChunkingObject, openai::ExpiresAfter, openai::CreateStoreRequest, openai::UpdateStoreRequest,
        openai::FileCountsObject, openai::StoreObject, openai::LastError, openai::StoreFileObject,
        openai::AttachRequest, openai::AttributesRequest, openai::TextContent, openai::FileContentPage,
        openai::BatchRequest, openai::BatchObject, openai::VectorStoreSearchRequest, openai::RankingOptions,
        openai::SearchResult, openai::SearchPage,
    )),
    tags(
        (name = "files", description = "OpenAI's files: uploads for vector stores (`purpose` `assistants` or `user_data`)"),
        (name = "vector_stores", description = "OpenAI's vector stores, each a knowledge base (`vs_` + its id): attach files, poll their status, search with attribute filters"),
    )
)]
pub struct KnowledgeOpenAiApi;

/// Registers the OpenAI routes (under `/v1`).
pub fn configure_openai(cfg: &mut web::ServiceConfig) {
    use openai as o;
    cfg.service(
        web::resource("/files")
            .route(web::get().to(o::list_files))
            .route(web::post().to(o::create_file)),
    )
    .service(
        web::resource("/files/{file_id}")
            .route(web::get().to(o::get_file))
            .route(web::delete().to(o::delete_file)),
    )
    .service(web::resource("/files/{file_id}/content").route(web::get().to(o::file_content)))
    .service(
        web::resource("/vector_stores")
            .route(web::get().to(o::list_stores))
            .route(web::post().to(o::create_store)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}")
            .route(web::get().to(o::get_store))
            .route(web::post().to(o::update_store))
            .route(web::delete().to(o::delete_store)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/search").route(web::post().to(o::search)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/files")
            .route(web::get().to(o::list_store_files))
            .route(web::post().to(o::attach_file)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/files/{file_id}")
            .route(web::get().to(o::get_store_file))
            .route(web::post().to(o::update_store_file))
            .route(web::delete().to(o::delete_store_file)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/files/{file_id}/content")
            .route(web::get().to(o::store_file_content)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/file_batches")
            .route(web::post().to(o::create_batch)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/file_batches/{batch_id}")
            .route(web::get().to(o::get_batch)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel")
            .route(web::post().to(o::cancel_batch)),
    )
    .service(
        web::resource("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")
            .route(web::get().to(o::list_batch_files)),
    );
}

/// Registers this context's routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(
        web::resource("/knowledge-bases")
            .route(web::get().to(h::list_bases))
            .route(web::post().to(h::create_base)),
    )
    .service(
        web::resource("/knowledge-bases/{kb_id}")
            .route(web::get().to(h::get_base))
            .route(web::patch().to(h::update_base))
            .route(web::delete().to(h::delete_base)),
    )
    .service(
        web::resource("/knowledge-bases/{kb_id}/documents")
            .route(web::get().to(h::list_documents))
            .route(web::post().to(h::upload_document)),
    )
    .service(
        web::resource("/knowledge-bases/{kb_id}/documents/{document_id}")
            .route(web::get().to(h::get_document))
            .route(web::delete().to(h::delete_document)),
    )
    .service(
        web::resource("/knowledge-bases/{kb_id}/documents/{document_id}/chunks")
            .route(web::get().to(h::document_chunks)),
    )
    .service(web::resource("/knowledge-bases/{kb_id}/search").route(web::post().to(h::search)))
    .service(web::resource("/knowledge-bases/{kb_id}/reindex").route(web::post().to(h::reindex)));
}
