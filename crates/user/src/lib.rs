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

/// Job payloads of this context (produced and consumed through apalis).
#[cfg(feature = "infra")]
pub mod jobs {
    use serde::{Deserialize, Serialize};

    /// Releases reservations whose process died before settling them (their deadline passed).
    /// Idempotent: a reservation is released once, however many runs see it.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReservationSweepJob {
        /// The schedule's tick it was pushed for (Unix seconds); `None` when pushed by hand.
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for ReservationSweepJob {
        const QUEUE: &'static str = "identity.reservation_sweep";
    }

    impl maas_shared::jobs::Scheduled for ReservationSweepJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }
}

/// What other contexts may depend on: who is calling and the metering gate.
pub mod contract {
    pub use crate::app::Actor;
    pub use crate::app::auth::{Authenticator, Credential, Principals};
    pub use crate::app::keys::{AppKeys, IssuedKey};
    pub use crate::app::quotas::QuotaGate;
    pub use crate::domain::api_key::ApiKeyId;
    pub use crate::domain::api_key::{ApiKey, KeyLimits};
    pub use crate::domain::errors::{IdentityError, LimitState, limit_headers};
    pub use crate::domain::limits::Demand;
    pub use crate::domain::ports::{Reservation, SettledRecords};
    pub use crate::domain::principal::{KeyGrant, Principal};
    pub use crate::domain::user::UserId;
    pub use crate::domain::values::{Permission, Role, Scope};
    #[cfg(feature = "http")]
    pub use crate::interface::extract::{AppKeyCaller, Authenticated, Caller, action_context};
}
