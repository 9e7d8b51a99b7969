//! Use cases: the registry (brands, cards, models, logos), the servers admins register, and the
//! nodes (agents) that join, heartbeat and report.

pub mod deployer;
pub mod deployments;
pub mod directory;
pub mod feed;
pub mod nodes;
pub mod registry;
pub mod servers;
pub mod ssh;
pub mod tasks;
