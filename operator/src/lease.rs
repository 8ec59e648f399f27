//! Leader election on a coordination.k8s.io/v1 Lease, so that with several replicas only one
//! reconciles.
//!
//! The decision is a pure state machine ([`Elector`]) in the manner of client-go: a follower
//! does not trust the holder's clock, it measures the lease's age on its own clock from the
//! moment it last saw the record change. Writes use the Lease's resourceVersion (optimistic
//! concurrency), so two replicas racing for an expired lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Whether this replica may write right now: leadership as a deadline on the local monotonic
/// clock, not a flag. The election moves the deadline forward after every successful renewal
/// (to the moment that renewal started plus the lease duration, less one retry period); a
/// replica whose renewals stopped — partitioned, or paused with SIGSTOP — finds the deadline
/// passed the moment it runs again, before its election loop has noticed anything, and writes
/// nothing.
#[derive(Clone, Debug)]
pub struct Fence(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Fence {
    /// A fence that never opens until the election extends it.
    pub fn closed() -> Self {
        Fence(std::sync::Arc::new(std::sync::Mutex::new(None)))
    }

    /// A fence that is always open: no leader election, this replica always writes.
    pub fn open() -> Self {
        // About a century: never reached by a running process.
        let far = std::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        Fence(std::sync::Arc::new(std::sync::Mutex::new(Some(far))))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        // A plain deadline: a panic elsewhere cannot leave it inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether writes are allowed now.
    pub fn holds(&self) -> bool {
        self.slot()
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Allows writes until `until`.
    pub fn extend(&self, until: std::time::Instant) {
        *self.slot() = Some(until);
    }

    /// Forbids writes from now on.
    pub fn close(&self) {
        *self.slot() = None;
    }
}

/// The parts of a Lease the election reads.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
    pub transitions: i32,
}

impl LeaseRecord {
    /// The record of a Lease object.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0),
            duration_seconds: spec.lease_duration_seconds,
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What to do with the Lease this round.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseAction {
    /// No Lease exists: create it with us as holder.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Free or expired: take it over (one more transition).
    Acquire,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// The election state of one replica.
#[derive(Clone, Debug)]
pub struct Elector {
    pub identity: String,
    pub lease_duration: Duration,
    /// The last record seen and when (our clock) it was first seen.
    observed: Option<(LeaseRecord, Timestamp)>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, lease_duration: Duration) -> Self {
        Self {
            identity: identity.into(),
            lease_duration,
            observed: None,
        }
    }

    /// Decides the action for the Lease as read at `now` (our clock).
    pub fn decide(&mut self, current: Option<&LeaseRecord>, now: Timestamp) -> LeaseAction {
        let Some(record) = current else {
            self.observed = None;
            return LeaseAction::Create;
        };
        let seen_at = match &self.observed {
            Some((r, at)) if r == record => *at,
            _ => {
                self.observed = Some((record.clone(), now));
                now
            }
        };
        let Some(holder) = &record.holder else {
            return LeaseAction::Acquire;
        };
        if *holder == self.identity {
            return LeaseAction::Renew;
        }
        let secs = record
            .duration_seconds
            .filter(|s| *s > 0)
            .map_or(self.lease_duration.as_secs() as i64, i64::from);
        if now.duration_since(seen_at) >= SignedDuration::from_secs(secs) {
            LeaseAction::Acquire
        } else {
            LeaseAction::Follow {
                holder: holder.clone(),
            }
        }
    }
}

/// The Lease after `action` by `identity` at `now`; `base` is the Lease as read (keeps its
/// resourceVersion for the optimistic-concurrency write).
pub fn desired_lease(
    base: Option<&Lease>,
    name: &str,
    ns: &str,
    identity: &str,
    duration: Duration,
    action: &LeaseAction,
    now: Timestamp,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    let secs = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    match action {
        LeaseAction::Create => {
            spec = LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
        }
        LeaseAction::Renew => {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
        }
        LeaseAction::Acquire => {
            spec.holder_identity = Some(identity.into());
            spec.lease_duration_seconds = Some(secs);
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        LeaseAction::Follow { .. } => {}
    }
    lease.spec = Some(spec);
    lease
}

/// Settings of the election loop.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease lives without renewal.
    pub lease_duration: Duration,
    /// How often the Lease is read and renewed.
    pub retry_period: Duration,
}

/// One round: read the Lease, decide, write. Returns whether we hold the Lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    elector: &mut Elector,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let now = Timestamp::now();
    let action = elector.decide(current.as_ref().map(LeaseRecord::of).as_ref(), now);
    let lease = desired_lease(
        current.as_ref(),
        &cfg.name,
        &cfg.namespace,
        &cfg.identity,
        cfg.lease_duration,
        &action,
        now,
    );
    let written = match action {
        LeaseAction::Follow { .. } => return Ok(false),
        LeaseAction::Create => api.create(&PostParams::default(), &lease).await,
        LeaseAction::Renew | LeaseAction::Acquire => {
            api.replace(&cfg.name, &PostParams::default(), &lease).await
        }
    };
    match written {
        Ok(_) => Ok(true),
        // Another replica wrote first: it won this round.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (on shutdown) so a standby takes over at its next round instead of
/// waiting for the lease to expire.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await?;
    Ok(())
}

/// Runs the election until `shutdown` resolves, publishing leadership on `leader` and as a
/// write deadline on `fence`. A leader that cannot renew within the lease duration steps down
/// (sends `false`); its fence has closed by then already.
pub async fn run(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    fence: Fence,
    shutdown: impl Future<Output = ()>,
) {
    let mut elector = Elector::new(cfg.identity.clone(), cfg.lease_duration);
    let mut last_renew: Option<tokio::time::Instant> = None;
    let valid_for = cfg.lease_duration.saturating_sub(cfg.retry_period);
    tokio::pin!(shutdown);
    loop {
        let started = std::time::Instant::now();
        let holding = match try_acquire_or_renew(&api, &cfg, &mut elector).await {
            Ok(true) => {
                last_renew = Some(tokio::time::Instant::now());
                fence.extend(started + valid_for);
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, lease = %cfg.name, "reading or renewing the Lease failed");
                // Keep leading only while the last renewal is still valid.
                last_renew.is_some_and(|t| {
                    t.elapsed() < cfg.lease_duration.saturating_sub(cfg.retry_period)
                })
            }
        };
        if !holding {
            last_renew = None;
            fence.close();
        }
        leader.send_if_modified(|l| {
            let changed = *l != holding;
            *l = holding;
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_period) => {}
            _ = &mut shutdown => break,
        }
    }
    if *leader.borrow() {
        fence.close();
        if let Err(error) = release(&api, &cfg).await {
            tracing::warn!(%error, "releasing the Lease failed");
        }
        leader.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::body_json;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    fn at(secs: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(secs)
    }

    fn record(holder: Option<&str>, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_string),
            renew_time: Some(at(renewed)),
            duration_seconds: Some(15),
            transitions: 3,
        }
    }

    #[test]
    fn no_lease_is_created() {
        let mut e = Elector::new("a", Duration::from_secs(15));
        assert_eq!(e.decide(None, at(0)), LeaseAction::Create);
    }

    #[test]
    fn holder_renews_and_free_lease_is_acquired() {
        let mut e = Elector::new("a", Duration::from_secs(15));
        assert_eq!(
            e.decide(Some(&record(Some("a"), 0)), at(1)),
            LeaseAction::Renew
        );
        assert_eq!(
            e.decide(Some(&record(None, 0)), at(2)),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn follower_takes_over_only_after_the_lease_expires_on_its_own_clock() {
        let mut e = Elector::new("b", Duration::from_secs(15));
        // The holder's clock is far ahead: its renew time must not matter, only when b saw it.
        let r = record(Some("a"), 10_000);
        assert_eq!(
            e.decide(Some(&r), at(100)),
            LeaseAction::Follow { holder: "a".into() }
        );
        assert_eq!(
            e.decide(Some(&r), at(114)),
            LeaseAction::Follow { holder: "a".into() }
        );
        // A renewal resets the follower's timer.
        let renewed = record(Some("a"), 10_005);
        assert_eq!(
            e.decide(Some(&renewed), at(114)),
            LeaseAction::Follow { holder: "a".into() }
        );
        assert_eq!(
            e.decide(Some(&renewed), at(128)),
            LeaseAction::Follow { holder: "a".into() }
        );
        // No renewal for a full lease duration: the leader is gone.
        assert_eq!(e.decide(Some(&renewed), at(129)), LeaseAction::Acquire);
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_does_not() {
        let base = Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        };
        let d = Duration::from_secs(15);
        let acquired = desired_lease(Some(&base), "l", "ns", "b", d, &LeaseAction::Acquire, at(5));
        let spec = acquired.spec.clone().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(5))));
        assert_eq!(
            acquired.metadata.resource_version.as_deref(),
            Some("7"),
            "write is conditional on what was read"
        );
        let renewed = desired_lease(Some(&base), "l", "ns", "a", d, &LeaseAction::Renew, at(6));
        let spec = renewed.spec.unwrap_or_default();
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.renew_time, Some(MicroTime(at(6))));
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            name: "champion-operator".into(),
            namespace: "champion-system".into(),
            identity: "pod-b".into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }

    fn json_response(status: u16, v: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }

    fn not_found() -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
    }

    #[tokio::test]
    async fn missing_lease_is_created_with_us_as_holder() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "champion-system");
        let api: Api<Lease> = Api::namespaced(client, "champion-system");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("GET the lease");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(
                req.uri().path(),
                "/apis/coordination.k8s.io/v1/namespaces/champion-system/leases/champion-operator"
            );
            send.send_response(json_response(404, not_found()));
            let (req, send) = handle.next_request().await.expect("POST the lease");
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/coordination.k8s.io/v1/namespaces/champion-system/leases"
            );
            let body = body_json(req).await;
            assert_eq!(body["spec"]["holderIdentity"], "pod-b");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(body["spec"]["leaseTransitions"], 0);
            send.send_response(json_response(201, body));
        });
        let mut e = Elector::new("pod-b", Duration::from_secs(15));
        let held = try_acquire_or_renew(&api, &config(), &mut e)
            .await
            .expect("round succeeds");
        assert!(held);
        server.await.expect("server assertions hold");
    }

    #[tokio::test]
    async fn losing_the_race_for_a_free_lease_is_not_leadership() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "champion-system");
        let api: Api<Lease> = Api::namespaced(client, "champion-system");
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("GET the lease");
            let lease = serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "champion-operator", "namespace": "champion-system", "resourceVersion": "41"},
                "spec": {"leaseDurationSeconds": 1, "leaseTransitions": 2}
            });
            send.send_response(json_response(200, lease));
            let (req, send) = handle.next_request().await.expect("PUT the lease");
            assert_eq!(req.method(), Method::PUT);
            let body = body_json(req).await;
            assert_eq!(
                body["metadata"]["resourceVersion"], "41",
                "conditional on the version read"
            );
            assert_eq!(body["spec"]["holderIdentity"], "pod-b");
            assert_eq!(body["spec"]["leaseTransitions"], 3);
            let conflict = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"});
            send.send_response(json_response(409, conflict));
        });
        let mut e = Elector::new("pod-b", Duration::from_secs(15));
        let held = try_acquire_or_renew(&api, &config(), &mut e)
            .await
            .expect("a conflict is not an error");
        assert!(!held);
        server.await.expect("server assertions hold");
    }

    #[tokio::test]
    async fn leader_announces_itself_and_releases_the_lease_on_shutdown() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "champion-system");
        let api: Api<Lease> = Api::namespaced(client, "champion-system");
        let (leader_tx, mut leader_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let fence = Fence::closed();
        let election = tokio::spawn(run(api, config(), leader_tx, fence.clone(), async move {
            let _ = stop_rx.await;
        }));
        // Round one: no Lease, create it.
        let (_, send) = handle.next_request().await.expect("GET the lease");
        send.send_response(json_response(404, not_found()));
        let (req, send) = handle.next_request().await.expect("POST the lease");
        let created = body_json(req).await;
        send.send_response(json_response(201, created.clone()));
        tokio::time::timeout(Duration::from_secs(5), leader_rx.wait_for(|l| *l))
            .await
            .expect("leadership is announced")
            .expect("sender alive");
        assert!(fence.holds(), "the leader may write");
        // Shutdown: the leader hands the Lease back.
        let _ = stop_tx.send(());
        let (req, send) = handle.next_request().await.expect("GET before release");
        assert_eq!(req.method(), Method::GET);
        let mut held = created;
        held["metadata"]["resourceVersion"] = serde_json::json!("5");
        send.send_response(json_response(200, held.clone()));
        let (req, send) = handle.next_request().await.expect("PUT the release");
        assert_eq!(req.method(), Method::PUT);
        let body = body_json(req).await;
        assert!(body["spec"]["holderIdentity"].is_null(), "released: {body}");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        send.send_response(json_response(200, body));
        tokio::time::timeout(Duration::from_secs(5), election)
            .await
            .expect("the election loop ends")
            .expect("no panic");
        assert!(!*leader_rx.borrow(), "not leading after release");
        assert!(!fence.holds(), "no writes after release");
    }

    /// A leader whose renewal hangs (a partitioned API server, or a process paused past its
    /// lease) stops writing once its last renewal expires, whether or not its election loop
    /// gets to run again.
    #[tokio::test]
    async fn a_leader_that_cannot_renew_stops_writing_within_the_lease_duration() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "champion-system");
        let api: Api<Lease> = Api::namespaced(client, "champion-system");
        let (leader_tx, mut leader_rx) = watch::channel(false);
        let cfg = LeaseConfig {
            lease_duration: Duration::from_secs(2),
            retry_period: Duration::from_secs(1),
            ..config()
        };
        let fence = Fence::closed();
        let started = std::time::Instant::now();
        let election = tokio::spawn(run(
            api,
            cfg,
            leader_tx,
            fence.clone(),
            std::future::pending::<()>(),
        ));
        let (_, send) = handle.next_request().await.expect("GET the lease");
        send.send_response(json_response(404, not_found()));
        let (req, send) = handle.next_request().await.expect("POST the lease");
        let created = body_json(req).await;
        send.send_response(json_response(201, created));
        tokio::time::timeout(Duration::from_secs(5), leader_rx.wait_for(|l| *l))
            .await
            .expect("leadership is announced")
            .expect("sender alive");
        assert!(fence.holds());
        // The next renewal's GET is never answered.
        let (_hung, _never) = handle.next_request().await.expect("GET to renew");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fence.holds() {
            assert!(
                std::time::Instant::now() < deadline,
                "the fence closes within the lease duration"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(500),
            "closed {:?} after the last renewal started, within the 2 s lease",
            started.elapsed()
        );
        election.abort();
    }

    #[test]
    fn a_fence_holds_until_its_deadline() {
        let f = Fence::closed();
        assert!(!f.holds());
        f.extend(std::time::Instant::now() + Duration::from_secs(60));
        assert!(f.holds());
        f.extend(std::time::Instant::now() - Duration::from_millis(1));
        assert!(!f.holds(), "a passed deadline is no leadership");
        assert!(Fence::open().holds());
        let o = Fence::open();
        o.close();
        assert!(!o.holds());
    }
}
