//! Every schema change of every context, in order. Files are named
//! `m{YYYYMMDD}_{HHMMSS}_{context}_{what}.rs`; a landed file is never edited: change the schema
//! with a new one. The API never migrates on boot: `maas migrate up` is a deploy step.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_shared_audit_events;
mod m20261123_000002_user_identity;
mod m20261123_000003_inference_gateway;
mod m20261123_000004_inference_conversations;
mod m20261202_000001_user_durable_ledger;
mod m20261202_000002_model_registry_compute;
mod m20261202_000003_model_deployments;
mod m20261203_000001_model_ssh_tasks;
mod m20261204_000001_knowledge_bases;
mod m20261205_000001_knowledge_vector_stores;
mod m20261206_000001_apps;

/// The platform's migrator.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_shared_audit_events::Migration),
            Box::new(m20261123_000002_user_identity::Migration),
            Box::new(m20261123_000003_inference_gateway::Migration),
            Box::new(m20261123_000004_inference_conversations::Migration),
            Box::new(m20261202_000001_user_durable_ledger::Migration),
            Box::new(m20261202_000002_model_registry_compute::Migration),
            Box::new(m20261202_000003_model_deployments::Migration),
            Box::new(m20261203_000001_model_ssh_tasks::Migration),
            Box::new(m20261204_000001_knowledge_bases::Migration),
            Box::new(m20261205_000001_knowledge_vector_stores::Migration),
            Box::new(m20261206_000001_apps::Migration),
        ]
    }
}
