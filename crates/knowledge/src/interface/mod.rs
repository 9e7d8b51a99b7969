//! HTTP handlers, DTOs and the context's OpenAPI document.

pub mod handlers;

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
