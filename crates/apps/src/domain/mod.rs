//! Entities, value objects, domain errors and the ports this context needs.

pub mod app;
pub mod call;
pub mod config;
pub mod errors;
pub mod message;
pub mod ports;
pub mod prompt;
