//! champion's model server: loads a checksum-verified `model.json` and answers the original
//! `/predict` form, KServe v1 and the Open Inference Protocol v2 over plain hyper.

pub mod config;
pub mod drift;
pub mod feedback;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod parse;
// The promtool check the integration tests share (tests/common), for the unit tests too.
#[cfg(test)]
#[path = "../tests/common/promtool.rs"]
mod promtool;
pub mod render;
pub mod routes;
pub mod server;
pub mod shadow;
