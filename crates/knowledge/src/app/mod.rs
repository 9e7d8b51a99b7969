//! Use cases: knowledge bases and their documents and search, OpenAI's files and vector
//! stores over them, and the ingestion job.

pub mod ingest;
pub mod knowledge;
pub mod stores;
