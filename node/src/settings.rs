//! The parsed config turned, once, into the checked types each crate takes.
//!
//! [`Settings::from_config`] is the only place that reads an
//! [`iris_config::Config`] to start a node: it validates it (again, so that
//! a `Config` built in code is checked too), then converts units (hours to
//! seconds, milliseconds to durations), fills in what the config leaves
//! implicit (edge ids, the core consumer group, the dev key and the dev
//! certificate), and makes the policy decisions that follow from the
//! config's shape (no client listeners without the edge role, the demo only
//! on a single node in development mode). It touches no file, socket or
//! environment variable: everything here is testable as data.

use crate::keys::AuthSettings;
use crate::listeners::{ListenSettings, TlsSource};
use crate::store::StoreSettings;
use iris_config::{Config, ConfigError, Role};
use iris_core::ShardsConfig;
use iris_edge::tls::QuicSettings;
use iris_edge::{EdgeConfig, SessionConfig};
use iris_envelope::EdgeId;
use iris_http::{HttpConfig, IngestLimits};
use std::path::PathBuf;
use std::time::Duration;

/// At shutdown, how long sessions get to close before the node goes on.
pub const SESSIONS_DRAIN: Duration = Duration::from_secs(5);
/// At shutdown, how long writes in flight get to become durable before the
/// store is closed (with a final sync) regardless.
pub const WRITES_DRAIN: Duration = Duration::from_secs(5);

/// Everything a node needs to start, each part in the type of the crate
/// that takes it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id.
    pub node_id: String,
    /// The region it serves.
    pub region: String,
    /// Where the layout file, embedded store, dev key and dev certificate live.
    pub data_dir: PathBuf,
    /// The root seed fixed by the config (to reproduce a run); `None`: drawn
    /// at start.
    pub seed: Option<u64>,
    /// What to listen on.
    pub listen: ListenSettings,
    /// Where the data lives.
    pub store: StoreSettings,
    /// The shards.
    pub shards: ShardsConfig,
    /// Envelopes queued per shard partition and per edge.
    pub bus_queue: usize,
    /// The id of this node's session edge (WebSocket, wss, QUIC).
    pub edge_id: EdgeId,
    /// The id of this node's HTTP API edge.
    pub http_edge: EdgeId,
    /// The session edge, but for its id, clock and seed.
    pub edge: EdgeSettings,
    /// QUIC transport settings.
    pub quic: QuicSettings,
    /// The service HTTP API.
    pub http: HttpConfig,
    /// Which keys verify tokens; development mode.
    pub auth: AuthSettings,
    /// Where the certificate comes from.
    pub tls: TlsSource,
    /// The regional cluster, when there is one.
    pub cluster: Option<ClusterSettings>,
    /// How the node stops.
    pub shutdown: ShutdownSettings,
    /// What the retention sweep keeps, and how often it runs.
    pub retention: (iris_storage::retention::RetentionPolicy, Duration),
    /// Where sampled traces go, if anywhere (ADR 0023).
    pub tracing: Option<iris_trace::TraceConfig>,
}

/// The session edge's settings; [`Settings::edge_config`] adds its id, the
/// clock and the seed.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Session limits.
    pub session: SessionConfig,
    /// Frames queued per session.
    pub queue_frames: usize,
    /// Largest frame read whole.
    pub max_frame_bytes: usize,
    /// Failed token checks allowed per source address per minute.
    pub failed_auth_per_minute: u32,
    /// Sends per second per tenant, and the burst.
    pub tenant_sends: (u32, u32),
    /// How often the edge renews its lease on every shard.
    pub lease_heartbeat: Duration,
    /// Client connections held at once.
    pub max_connections: usize,
    /// QUIC handshakes in progress above which clients get a Retry, and
    /// at most.
    pub quic_handshakes: (usize, usize),
}

/// A node of a regional cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Kafka bootstrap servers.
    pub kafka: String,
    /// The core nodes' consumer group (defaulted to `iris.<region>.core`).
    pub core_group: String,
    /// How long a fetch may wait for data, ms.
    pub fetch_wait_ms: u32,
    /// What such a fetch waits for, bytes.
    pub fetch_min_bytes: u32,
    /// A silent core node loses its shards after this, ms.
    pub session_timeout_ms: u32,
    /// How long the producer waits to fill a batch, ms.
    pub linger_ms: u32,
    /// Producers the node spreads its partitions over.
    pub producers: usize,
    /// Partitions of the shard topic (ADR 0031); unset, as the topic has
    /// them, or eight shards to a partition for a new topic.
    pub shard_partitions: Option<u32>,
    /// Whether this node runs shards (the core role).
    pub runs_shards: bool,
    /// The federation this region belongs to.
    pub federation: Option<iris_config::Federation>,
    /// Whether the region publishes its log topics (ADR 0022).
    pub log_topics: bool,
    /// How often an idle log publisher looks for new records.
    pub log_publish_interval: Duration,
}

/// How the node stops on a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// How long `/readyz` answers 503 before sessions are closed.
    pub drain: Duration,
    /// Over how long the sessions are then closed, a few at a time.
    pub spread: Duration,
    /// How long sessions get to close.
    pub sessions: Duration,
    /// How long writes in flight get to become durable.
    pub writes: Duration,
}

/// How a node stops ([`ShutdownSettings::plan`]), carried out in order
/// by `Node::run`: `/readyz` answers 503 for `drain`; the HTTP API stops;
/// sessions close over `spread`; sessions get `sessions` to finish and
/// writes in flight `writes` to become durable; the store closes. A second
/// stop request cuts the drain and the spread short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownPlan {
    /// How long `/readyz` answers 503 first.
    pub drain: Duration,
    /// Over how long the sessions close.
    pub spread: Duration,
    /// The node exits with an error (its store failed: a restart recovers
    /// from the journal).
    pub failed: bool,
}

impl ShutdownSettings {
    /// The plan for a stop asked for (`store_failed == false`) or forced by
    /// a failed store: then nothing waits, since sessions and load balancers
    /// can do nothing with a node that cannot write, and the exit is an
    /// error.
    pub fn plan(&self, store_failed: bool) -> ShutdownPlan {
        if store_failed {
            ShutdownPlan { drain: Duration::ZERO, spread: Duration::ZERO, failed: true }
        } else {
            ShutdownPlan { drain: self.drain, spread: self.spread, failed: false }
        }
    }
}

impl Settings {
    /// Checks `cfg` and converts it.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let data_dir = cfg.data_dir();
        let l = &cfg.limits;
        let h = &cfg.http;
        // In a federation an edge's id names its region too, so that a shard
        // anywhere can tell where a session lives.
        let http_node = format!("{}-http", cfg.node_id);
        let (edge_id, http_edge) = match &cfg.federation {
            Some(_) => (EdgeId::qualified(&cfg.node_id, &cfg.region), EdgeId::qualified(&http_node, &cfg.region)),
            None => (EdgeId(cfg.node_id.as_str().into()), EdgeId(http_node.into())),
        };
        let tracing = match &cfg.tracing {
            Some(t) => {
                let endpoint = iris_trace::Endpoint::parse(&t.otlp_endpoint)
                    .map_err(|problem| ConfigError::Invalid { field: "tracing.otlp_endpoint", problem })?;
                let traced = iris_trace::TraceConfig::new(endpoint, t.sample_ratio, &t.service_name, &cfg.node_id);
                Some(
                    traced
                        .map_err(|e| ConfigError::Invalid { field: "tracing.sample_ratio", problem: e.to_string() })?,
                )
            }
            None => None,
        };
        Ok(Self {
            tracing,
            node_id: cfg.node_id.clone(),
            region: cfg.region.clone(),
            seed: cfg.seed,
            listen: ListenSettings::from_config(cfg),
            store: StoreSettings::from_config(cfg)?,
            shards: ShardsConfig {
                shards: cfg.core.shards,
                threads: cfg.core.shard_threads,
                max_inflight_writes: cfg.core.max_inflight_writes,
                max_cached_users: cfg.core.max_cached_users,
                max_contacts: l.max_contacts,
                max_subscribers: l.max_subscribers_per_user,
                max_sessions: l.max_sessions_per_user,
                page_max_bytes: l.max_page_bytes,
                edge_lease_ms: cfg.core.edge_lease_ms,
                mark_presence: cfg.core.mark_presence,
                region: cfg.region.clone(),
                outbox_max: cfg
                    .cluster
                    .as_ref()
                    .filter(|c| c.publishes_logs(cfg.storage.backend))
                    .map(|c| c.log_outbox_max),
            },
            bus_queue: cfg.core.bus_queue,
            edge_id,
            http_edge,
            edge: EdgeSettings {
                session: SessionConfig {
                    node: cfg.node_id.clone(),
                    region: cfg.region.clone(),
                    max_body_bytes: l.max_body_bytes,
                    frames_per_second: l.frames_per_second,
                    frame_burst: l.frame_burst,
                    heartbeat_ms: l.heartbeat_ms,
                    hello_timeout_ms: l.hello_timeout_ms,
                    max_subscriptions: l.max_subscriptions_per_session,
                    max_list_items: l.max_list_items,
                },
                queue_frames: l.session_queue_frames,
                max_frame_bytes: l.max_frame_bytes,
                failed_auth_per_minute: cfg.auth.failed_auth_per_minute,
                tenant_sends: (l.tenant_sends_per_second, l.tenant_send_burst),
                lease_heartbeat: Duration::from_millis(
                    cfg.core.edge_lease_ms / u64::from(cfg.core.edge_lease_renewals),
                ),
                max_connections: l.max_connections,
                quic_handshakes: (cfg.quic.handshakes_before_retry, cfg.quic.max_handshakes),
            },
            quic: QuicSettings {
                idle_timeout: Duration::from_millis(cfg.quic.idle_timeout_ms),
                stream_window: cfg.quic.stream_window_bytes,
                connection_window: cfg.quic.connection_window_bytes,
            },
            http: HttpConfig {
                max_body_bytes: h.max_body_bytes,
                body_timeout: std::time::Duration::from_millis(h.body_timeout_ms),
                ingest: IngestLimits {
                    max_batch: h.max_batch_events,
                    max_event_bytes: h.max_event_bytes,
                    max_depth: h.max_payload_depth,
                    max_age_ms: ms_i64(h.max_event_age_ms),
                    max_skew_ms: ms_i64(h.max_event_skew_ms),
                },
                max_contacts: l.max_contacts,
                tenant_events_per_second: h.tenant_events_per_second,
                tenant_event_burst: h.tenant_event_burst,
                max_pending: h.max_pending_requests,
                request_timeout: Duration::from_millis(h.request_timeout_ms),
                failed_auth_per_minute: cfg.auth.failed_auth_per_minute,
            },
            auth: AuthSettings::from_config(cfg),
            tls: TlsSource::from_config(cfg),
            cluster: cfg.cluster.as_ref().map(|c| ClusterSettings {
                kafka: c.kafka.clone(),
                core_group: c.core_group.clone().unwrap_or_else(|| format!("iris.{}.core", cfg.region)),
                fetch_wait_ms: c.fetch_wait_ms,
                fetch_min_bytes: c.fetch_min_bytes,
                session_timeout_ms: c.session_timeout_ms,
                linger_ms: c.linger_ms,
                producers: c.producers as usize,
                shard_partitions: c.shard_partitions,
                runs_shards: cfg.roles.contains(&Role::Core),
                federation: cfg.federation.clone(),
                log_topics: c.publishes_logs(cfg.storage.backend),
                log_publish_interval: Duration::from_millis(c.log_publish_interval_ms.into()),
            }),
            retention: (retention_policy(&cfg.retention), Duration::from_secs(cfg.retention.sweep_interval_secs)),
            shutdown: ShutdownSettings {
                drain: Duration::from_millis(cfg.listen.drain_ms),
                spread: Duration::from_millis(cfg.listen.drain_spread_ms),
                sessions: SESSIONS_DRAIN,
                writes: WRITES_DRAIN,
            },
            data_dir,
        })
    }

    /// The session edge's config with its clock and seed.
    pub fn edge_config(&self, clock: iris_clock::SharedClock, seed: u64) -> EdgeConfig {
        let e = self.edge.clone();
        EdgeConfig {
            edge: self.edge_id.clone(),
            session: e.session,
            queue_frames: e.queue_frames,
            max_frame_bytes: e.max_frame_bytes,
            failed_auth_per_minute: e.failed_auth_per_minute,
            tenant_sends: e.tenant_sends,
            lease_heartbeat: e.lease_heartbeat,
            max_connections: e.max_connections,
            quic_handshakes: e.quic_handshakes,
            clock,
            seed,
        }
    }
}

/// Milliseconds as the signed count the crates compute with (validated
/// bounds keep real values far below `i64::MAX`).
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Hours in a unit (`3_600` for seconds, `3_600_000` for ms), as the
/// signed count the stores compute with.
pub(crate) fn hours_in(hours: u64, unit_per_hour: i64) -> i64 {
    ms_i64(hours).saturating_mul(unit_per_hour)
}

/// `[retention]` as the sweep reads it: days to ms, 0 to forever.
fn retention_policy(r: &iris_config::Retention) -> iris_storage::retention::RetentionPolicy {
    use iris_storage::retention::{Keep, RetentionPolicy};
    let ms = |days: u32| (days > 0).then_some(i64::from(days) * 86_400_000);
    let default =
        Keep { graph_log: ms(r.graph_log_days), events_log: ms(r.events_log_days), rollups: ms(r.rollup_days) };
    let tenants = r
        .tenants
        .iter()
        .map(|(t, k)| {
            let keep = Keep {
                graph_log: k.graph_log_days.map_or(default.graph_log, ms),
                events_log: k.events_log_days.map_or(default.events_log, ms),
                rollups: k.rollup_days.map_or(default.rollups, ms),
            };
            (t.clone(), keep)
        })
        .collect();
    RetentionPolicy { default, tenants }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretSource;

    #[test]
    fn a_stop_asked_for_drains_and_spreads_and_a_failed_store_stops_at_once_with_an_error() {
        let s = ShutdownSettings {
            drain: Duration::from_secs(5),
            spread: Duration::from_secs(2),
            sessions: Duration::from_secs(10),
            writes: Duration::from_secs(10),
        };
        assert_eq!(
            s.plan(false),
            ShutdownPlan { drain: Duration::from_secs(5), spread: Duration::from_secs(2), failed: false }
        );
        assert_eq!(s.plan(true), ShutdownPlan { drain: Duration::ZERO, spread: Duration::ZERO, failed: true });
    }
    use crate::store::StoreSettings;

    fn settings(toml: &str) -> Settings {
        Settings::from_config(&Config::from_toml(toml).unwrap()).unwrap()
    }

    const REDIS_REGION: &str = "region = \"eu\"\nroles = [\"edge\", \"router\"]\n\
        [storage]\nbackend = \"redis\"\nredis_url = \"redis://r:6379/2\"\nsession_ttl_hours = 2\n\
        [cluster]\nkafka = \"k:9092\"\n";

    #[test]
    fn the_defaults_are_a_single_development_node() {
        let s = settings("");
        assert_eq!((s.node_id.as_str(), s.region.as_str()), ("node-1", "local"));
        assert_eq!(s.data_dir, PathBuf::from("./iris-data"));
        assert_eq!((s.edge_id.0.as_ref(), s.http_edge.0.as_ref()), ("node-1", "node-1-http"));
        match &s.store {
            StoreSettings::Embedded(e) => {
                assert_eq!(e.path, PathBuf::from("./iris-data/store"));
                assert_eq!((e.max_batch_ops, e.queue_batches), (8_192, 4_096));
                assert_eq!(e.dedup_retention_ms, 192 * 3_600_000);
            }
            other => panic!("the default store is embedded, not {other:?}"),
        }
        assert!(s.cluster.is_none());
        assert!(s.auth.dev_mode && s.auth.hs256, "no key configured: the dev key, and the demo");
        assert_eq!(s.auth.secret, SecretSource::DevKey(PathBuf::from("./iris-data")));
        assert_eq!(s.tls, TlsSource::DevCert(PathBuf::from("./iris-data")));
        let l = &s.listen;
        assert_eq!(l.ws.unwrap().port(), 8080);
        assert_eq!((l.quic.unwrap().port(), l.http.unwrap().port(), l.metrics.unwrap().port()), (4433, 8090, 9100));
        assert!(l.wss.is_none() && l.https.is_none());
        assert_eq!(
            s.shutdown,
            ShutdownSettings {
                drain: Duration::ZERO,
                spread: Duration::ZERO,
                sessions: SESSIONS_DRAIN,
                writes: WRITES_DRAIN
            }
        );
        assert_eq!(s.shards.shards, 64);
        assert_eq!(s.bus_queue, 8_192);
        assert_eq!(s.seed, None);
    }

    #[test]
    fn retention_days_become_the_sweeps_policy() {
        let day = 86_400_000;
        let s = settings("");
        let (p, every) = &s.retention;
        assert_eq!(*every, Duration::from_secs(3_600));
        assert_eq!(
            (p.default.graph_log, p.default.events_log, p.default.rollups),
            (None, Some(30 * day), Some(400 * day))
        );
        let s = settings(
            "[retention]\ngraph_log_days = 365\nevents_log_days = 0\nsweep_interval_secs = 60\n\
             [retention.tenants.acme]\nevents_log_days = 7\n[retention.tenants.globex]\ngraph_log_days = 0\n",
        );
        let (p, every) = &s.retention;
        assert_eq!(*every, Duration::from_secs(60));
        assert_eq!(p.keep("other").events_log, None, "0 keeps forever");
        assert_eq!(p.keep("acme").events_log, Some(7 * day));
        assert_eq!(p.keep("acme").graph_log, Some(365 * day), "what a tenant leaves out is the default");
        assert_eq!(p.keep("globex").graph_log, None);
        assert!(
            Config::from_toml("[retention]\nsweep_interval_secs = 0\n")
                .unwrap_err()
                .to_string()
                .contains("sweep_interval")
        );
    }

    #[test]
    fn limits_are_carried_into_the_crate_configs() {
        let s = settings(
            "[limits]\nmax_body_bytes = 1000\nmax_contacts = 7\nmax_sessions_per_user = 3\nframes_per_second = 9\n\
             tenant_sends_per_second = 11\ntenant_send_burst = 12\nsession_queue_frames = 1200\n\
             [core]\nshards = 8\nedge_lease_ms = 9000\nmax_cached_users = 99\n\
             [http]\nmax_event_age_ms = 86400000\nmax_event_skew_ms = 5000\nmax_batch_events = 10\n\
             tenant_event_burst = 10\nrequest_timeout_ms = 250\n\
             [quic]\nidle_timeout_ms = 2000\n[auth]\nfailed_auth_per_minute = 4\n[listen]\ndrain_ms = 1500\ndrain_spread_ms = 2500\n",
        );
        assert_eq!((s.shards.shards, s.shards.edge_lease_ms, s.shards.max_cached_users), (8, 9_000, 99));
        assert_eq!((s.shards.max_contacts, s.shards.max_sessions), (7, 3));
        assert_eq!(s.shards.region, "local");
        assert_eq!((s.edge.session.max_body_bytes, s.edge.session.frames_per_second), (1_000, 9));
        assert_eq!((s.edge.queue_frames, s.edge.failed_auth_per_minute, s.edge.tenant_sends), (1_200, 4, (11, 12)));
        assert_eq!(s.edge.lease_heartbeat, Duration::from_millis(3_000), "a third of the lease by default");
        let i = &s.http.ingest;
        assert_eq!((i.max_age_ms, i.max_skew_ms, i.max_batch), (86_400_000, 5_000, 10));
        assert_eq!((s.http.max_contacts, s.http.request_timeout), (7, Duration::from_millis(250)));
        assert_eq!(s.quic.idle_timeout, Duration::from_secs(2));
        assert_eq!((s.shutdown.drain, s.shutdown.spread), (Duration::from_millis(1_500), Duration::from_millis(2_500)));
        let e = s.edge_config(iris_clock::system(), 42);
        assert_eq!((e.edge, e.seed, e.lease_heartbeat), (s.edge_id.clone(), 42, Duration::from_secs(3)));

        let four = settings("[core]\nedge_lease_ms = 10000\nedge_lease_renewals = 4\n");
        assert_eq!(four.edge.lease_heartbeat, Duration::from_millis(2_500));
    }

    #[test]
    fn the_default_ingest_window_is_thirty_days_back_and_an_hour_ahead() {
        let i = settings("").http.ingest;
        assert_eq!((i.max_age_ms, i.max_skew_ms), (30 * 24 * 3_600_000, 3_600_000));
    }

    #[test]
    fn an_unknown_backend_is_refused_before_anything_starts() {
        let e = Config::from_toml("[storage]\nbackend = \"mongo\"\n").unwrap_err().to_string();
        assert!(e.contains("storage.backend") && e.contains("mongo"), "{e}");
        // A Config built in code is checked again.
        let mut cfg = Config::default();
        cfg.storage.backend = iris_config::Backend::Redis;
        let e = Settings::from_config(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("storage.redis_url"), "{e}");
    }

    #[test]
    fn store_retention_is_converted_from_hours_per_backend() {
        let s = settings(REDIS_REGION);
        match &s.store {
            StoreSettings::Redis(r) => {
                assert_eq!(r.url, "redis://r:6379/2");
                assert_eq!((r.retention_secs, r.session_ttl_secs), (192 * 3_600, 2 * 3_600));
            }
            other => panic!("{other:?}"),
        }
        let s = settings(
            "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"k:9092\"\n[storage]\nbackend = \"scylla\"\n\
             dedup_retention_hours = 200\n[storage.scylla]\nnodes = [\"10.0.0.1:9042\"]\n",
        );
        match &s.store {
            StoreSettings::Scylla(o) => {
                assert_eq!((o.retention_secs, o.session_ttl_secs), (200 * 3_600, 24 * 3_600));
                assert_eq!(o.settings.nodes, ["10.0.0.1:9042"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.store.backend(), iris_config::Backend::Scylla);
    }

    #[test]
    fn a_cluster_node_without_the_edge_role_listens_for_no_clients_and_serves_no_demo() {
        let s = settings(REDIS_REGION);
        let c = s.cluster.as_ref().unwrap();
        assert_eq!((c.kafka.as_str(), c.core_group.as_str(), c.runs_shards), ("k:9092", "iris.eu.core", false));
        assert!(s.listen.ws.is_some(), "an edge listens");
        assert!(!s.auth.dev_mode, "never the demo in a region, whatever its keys");
        assert!(s.auth.hs256);

        let core = settings(&REDIS_REGION.replace("\"edge\"", "\"core\""));
        let l = &core.listen;
        assert!(l.ws.is_none() && l.wss.is_none() && l.quic.is_none() && l.http.is_none() && l.https.is_none());
        assert!(l.metrics.is_some(), "the operator's listener stays");
        assert!(core.cluster.unwrap().runs_shards);

        let grouped = settings(&format!("{REDIS_REGION}core_group = \"g\"\n"));
        assert_eq!(grouped.cluster.unwrap().core_group, "g");
    }

    #[test]
    fn a_federated_edge_names_its_region() {
        let s =
            settings(&format!("{REDIS_REGION}[federation]\nregions = [\"eu\", \"us\"]\nglobal_kafka = \"g:9092\"\n"));
        assert_eq!(s.edge_id, EdgeId::qualified("node-1", "eu"));
        assert_eq!(s.http_edge, EdgeId::qualified("node-1-http", "eu"));
        assert_eq!(s.cluster.unwrap().federation.unwrap().regions, ["eu", "us"]);
    }

    #[test]
    fn configured_keys_end_development_mode() {
        let jwks = settings("[auth]\njwks_file = \"/k/jwks.json\"\n");
        assert!(!jwks.auth.dev_mode);
        assert!(!jwks.auth.hs256, "with a JWKS file the dev key stays out unless a secret file is named");
        assert_eq!(jwks.auth.jwks_file, Some(PathBuf::from("/k/jwks.json")));
        let both = settings("[auth]\njwks_file = \"/k/jwks.json\"\nhs256_secret_file = \"/k/hs\"\n");
        assert!(!both.auth.dev_mode && both.auth.hs256);
        assert_eq!(both.auth.secret, SecretSource::File(PathBuf::from("/k/hs")));
        let secret = settings("[auth]\nhs256_secret_file = \"/k/hs\"\nissuer = \"i\"\nleeway_secs = 5\n");
        assert!(!secret.auth.dev_mode && secret.auth.hs256);
        assert_eq!((secret.auth.verifier.issuer.as_deref(), secret.auth.verifier.leeway_secs), (Some("i"), 5));
    }

    #[test]
    fn named_certificates_replace_the_dev_certificate() {
        let s = settings("[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n");
        assert_eq!(s.tls, TlsSource::Files { cert: PathBuf::from("/c.pem"), key: PathBuf::from("/k.pem") });
    }
}
