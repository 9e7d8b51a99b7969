//! Use cases of the gateway: provider administration and proxying metered calls.

pub mod balance;
pub mod chat;
pub mod conversations;
pub mod embed;
pub mod gateway;
pub mod legacy;
pub mod metered;
pub mod providers;
pub mod settlement;
pub mod usage;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod gateway_tests;
