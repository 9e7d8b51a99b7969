//! Entities, value objects, domain errors and the ports this context needs.

pub mod base;
pub mod document;
pub mod errors;
pub mod ports;
pub mod search;
pub mod store;
pub mod text;
