//! Registry and compute: accelerator brands and cards, models, GPU servers and the node agents
//! that join, heartbeat and report their resources, deployments and their instances, and the
//! servers' SSH access, terminals and remote tasks.
//!
//! Layers (DESIGN §2): `domain` (entities, value objects, errors, ports; no framework types),
//! `app` (use cases over the ports), `infra` (adapters, feature `infra`) and `interface` (HTTP
//! handlers, DTOs and OpenAPI, feature `http`). Other contexts use only what this file exports.

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::{ModelApi, configure, configure_console};

/// What other processes (the agent, the worker) and contexts (the gateway) share with this
/// context.
pub mod contract {
    pub use crate::domain::deployment::{
        Assignment, Assignments, InstanceReport, InstanceState, RESERVED_ENV,
    };
    pub use crate::domain::directory::{DeploymentDirectory, ServedEndpoint, ServedModel};
    pub use crate::domain::registry::{Engine, ModelSource};
    pub use crate::domain::server::{DiskReport, GpuReport, NodeReport};
    pub use crate::domain::ssh::{AgentExecRequest, AgentExecResponse, append_capped};
}

/// Job payloads of this context (produced and consumed through apalis).
#[cfg(feature = "infra")]
pub mod jobs {
    use serde::{Deserialize, Serialize};

    /// Grades every joined node by its last heartbeat and stores the statuses that changed.
    /// Idempotent: any number of runs leaves the same result.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NodeLivenessJob {
        /// The schedule's tick it was pushed for (Unix seconds); `None` when pushed by hand.
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for NodeLivenessJob {
        const QUEUE: &'static str = "model.node_liveness";
    }

    /// Runs one step of a deployment toward what its admin asked (and re-enqueues itself while
    /// it is in motion). Idempotent: it reloads the deployment and does only what is due.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeployJob {
        /// The deployment.
        pub deployment_id: uuid::Uuid,
        /// Why it was enqueued (logged; the job acts on the deployment's state).
        #[serde(default)]
        pub action: crate::domain::deploy_ports::DeployAction,
        /// Retries after failures so far (the next waits `min(2^attempt, 60)` s).
        #[serde(default)]
        pub attempt: u32,
    }

    impl maas_shared::jobs::Job for DeployJob {
        const QUEUE: &'static str = "model.deploy";
    }

    /// Compares desired and reported state of every deployment: places again the replicas of
    /// nodes offline past the grace, and enqueues the deploy job of every deployment not at rest.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StatusSyncJob {
        /// The schedule's tick it was pushed for (Unix seconds).
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for StatusSyncJob {
        const QUEUE: &'static str = "model.status_sync";
    }

    impl maas_shared::jobs::Scheduled for StatusSyncJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }

    /// Runs one queued run of a remote task on its server. Idempotent: a finished run is left
    /// as it is, a run whose worker died is marked lost (never run twice).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RemoteTaskJob {
        /// The run.
        pub run_id: uuid::Uuid,
    }

    impl maas_shared::jobs::Job for RemoteTaskJob {
        const QUEUE: &'static str = "model.remote_task";
    }

    /// Fires the remote tasks that are due (each due time once across all workers) and pushes
    /// again the jobs of runs left queued.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TaskTickJob {
        /// The schedule's tick it was pushed for (Unix seconds).
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for TaskTickJob {
        const QUEUE: &'static str = "model.task_tick";
    }

    impl maas_shared::jobs::Scheduled for TaskTickJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }

    impl maas_shared::jobs::Scheduled for NodeLivenessJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }
}
