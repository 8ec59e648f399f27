//! The local Kubernetes cluster the end-to-end suites run against (module [`cluster`], driven by
//! the `champion-cluster` binary and by [`cluster::shared`]), helpers for those suites
//! ([`testing`]), and the error type of both.
//!
//! An end-to-end test in `tests/tests/*.rs` looks like this:
//!
//! ```no_run
//! # async fn example() -> champion_tests::Result<()> {
//! let cluster = champion_tests::shared().await?; // reuses the running cluster, or starts it
//! let ns = champion_tests::TestNamespace::create(&cluster, "my-test").await?; // deleted on drop
//! cluster.kubectl(&["apply", "-n", &ns.name, "-f", "manifest.yaml"])?;
//! let ips = champion_tests::testing::pod_ips(&cluster, &ns.name, "app=web").await?;
//! # let _ = ips;
//! # Ok(())
//! # }
//! ```
//!
//! Wait with [`testing::wait_for`] / [`testing::wait_object`] (deadlines, never sleeps); reach
//! pods from the test process directly on their IPs ([`testing::http_get`]); run in-pod actions
//! with the `champion/probe:dev` image (the `champion-probe` binary of `tests/probe`).

pub mod cluster;
pub mod error;
pub mod faults;
pub mod live;
pub mod moto;
pub mod operator;
pub mod testing;

pub use cluster::{Cluster, shared};
pub use error::{ClusterError, Result};
pub use testing::TestNamespace;
