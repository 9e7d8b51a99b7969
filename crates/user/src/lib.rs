//! Identity: users, roles and permissions, JWT sessions, API keys, quotas and rate limits.
//!
//! Layers (DESIGN §2): `domain` (entities, value objects, errors, ports; no framework types),
//! `app` (use cases over the ports), `infra` (adapters, feature `infra`) and `interface` (HTTP
//! handlers, extractors, DTOs and OpenAPI, feature `http`). Other contexts use only
//! [`contract`].

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::{UserApi, configure};

#[cfg(feature = "test-support")]
pub mod testing;

/// What other contexts may depend on: who is calling and the metering gate.
pub mod contract {
    pub use crate::app::auth::{Authenticator, Credential};
    pub use crate::app::quotas::QuotaGate;
    pub use crate::domain::api_key::ApiKeyId;
    pub use crate::domain::errors::{IdentityError, LimitState, limit_headers};
    pub use crate::domain::limits::Demand;
    pub use crate::domain::ports::Reservation;
    pub use crate::domain::principal::{KeyGrant, Principal};
    pub use crate::domain::user::UserId;
    pub use crate::domain::values::{Permission, Role, Scope};
    #[cfg(feature = "http")]
    pub use crate::interface::extract::{Authenticated, Caller, action_context};
}
