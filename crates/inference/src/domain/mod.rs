//! The gateway's domain: upstream providers and their model routes, usage records, the errors
//! of a proxied call, and the SSE reading that metering needs. No framework types.

pub mod call;
pub mod conversation;
pub mod errors;
pub mod ports;
pub mod provider;
pub mod sse;
pub mod usage;
