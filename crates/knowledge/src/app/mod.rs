//! Use cases: knowledge bases and their documents and search, and the ingestion job.

pub mod ingest;
pub mod knowledge;
