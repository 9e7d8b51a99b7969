//! The identity domain: users, roles and permissions, API keys, sessions, limits and quotas.
//! No framework types: adapters live in `infra`, handlers in `interface`.

pub mod api_key;
pub mod errors;
pub mod limits;
pub mod ports;
pub mod principal;
pub mod session;
pub mod user;
pub mod values;
