//! Black-box tests of the platform over real HTTP, PostgreSQL, Redis and binaries.
//! One binary (zero2prod style); each test gets its own database and Redis prefix.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod admin;
mod agents;
mod apps;
mod audit;
mod auth;
mod binaries;
mod conversations;
mod deployments;
mod engine;
mod errors;
mod gateway;
mod keys;
mod knowledge;
mod ledger;
mod legacy;
mod limits;
mod registry;
mod routes;
mod sdk;
mod shutdown;
mod ssh;
mod system;
mod tls;
mod vector_index;
