//! Entities, value objects, domain errors and the ports this context needs.

pub mod deploy_ports;
pub mod deployment;
pub mod directory;
pub mod errors;
pub mod logo;
pub mod ports;
pub mod registry;
pub mod server;
pub mod ssh;
pub mod task;
pub mod values;
