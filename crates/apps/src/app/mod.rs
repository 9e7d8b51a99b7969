//! Use cases: app management (drafts, versions, keys, logs) and the endpoint (calls,
//! previews, feedback).

pub mod apps;
pub mod endpoint;
