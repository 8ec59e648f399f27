//! The local Kubernetes cluster the end-to-end suites run against (module [`cluster`], driven by
//! the `champion-cluster` binary and by [`cluster::shared`]), helpers for those suites
//! ([`testing`]), and the error type of both.

pub mod cluster;
pub mod error;
pub mod testing;

pub use cluster::{Cluster, shared};
pub use error::{ClusterError, Result};
pub use testing::TestNamespace;
