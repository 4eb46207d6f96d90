//! The service HTTP API: contact-graph sync for an app's backend and
//! multi-tenant event ingestion, served by actix-web.
//!
//! Requests become envelopes on the same pipeline as chat: the front end
//! acts as an edge whose "sessions" are pending requests. It publishes an
//! envelope carrying its own address, the owner's shard does the work and
//! answers there once the work is durable.
//!
//! The time (API-key cache ages, tenant budgets, event ages, analytics
//! ranges) comes from the clock the front end is given (ADR 0019).

pub mod demo;
pub mod rules;
pub mod validate;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use dashmap::DashMap;
use iris_auth::apikeys::{ApiKeys, KEY_PREFIX, key_hash};
use iris_auth::budget::TenantBudget;
use iris_auth::guard::AuthGuard;
use iris_auth::{KeyStore, SERVICE_SCOPE, valid_name};
use iris_clock::SharedClock;
use iris_envelope::{
    EdgeId, EdgeInput, Millis, Notice, ServiceReply, SessionAddr, SessionId, ShardEnvelope, ShardInput, ShardKey,
    Tenant, UserKey,
};
use iris_router::{EdgeReceiver, Router};
use iris_storage::{LogKind, Store};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
pub use validate::IngestLimits;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a client has to send a request's whole body once its head
    /// is in (slowloris on the body): 408 after it.
    pub body_timeout: Duration,
    /// Ingestion limits.
    pub ingest: IngestLimits,
    /// Most contacts in a list.
    pub max_contacts: usize,
    /// Sustained events per second per tenant; beyond, 429.
    pub tenant_events_per_second: u32,
    /// Burst of events above the sustained rate.
    pub tenant_event_burst: u32,
    /// Requests waiting for a shard at once; beyond, 503.
    pub max_pending: usize,
    /// How long a request may wait for its shard.
    pub request_timeout: Duration,
    /// Failed credential checks allowed per source address per minute;
    /// beyond, 429 until the minute has passed (`auth.failed_auth_per_minute`).
    pub failed_auth_per_minute: u32,
}

/// An answer from a shard.
#[derive(Debug)]
enum Answer {
    Reply(ServiceReply),
    Notice(Notice),
}

/// What every handler shares.
pub struct HttpFront {
    cfg: HttpConfig,
    edge: EdgeId,
    keys: Arc<KeyStore>,
    api_keys: ApiKeys,
    router: Router,
    store: Arc<dyn Store>,
    pending: DashMap<u64, oneshot::Sender<Answer>>,
    next_request: AtomicU64,
    budget: TenantBudget,
    /// Failed credential checks per source address.
    guard: AuthGuard,
    clock: SharedClock,
    /// The chat demo at `/demo`, only with the development key.
    demo: Option<web::Data<demo::DemoConfig>>,
}

/// An HTTP error with a message.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
    /// A credential was presented and refused (counted per address).
    bad_credential: bool,
}

/// How long a client of the service API has to send a request's head, and
/// how long an idle kept-alive connection stays open.
const HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// The window of the failed-authentication count per address.
const AUTH_WINDOW_MS: i64 = 60_000;

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_secs: None, bad_credential: false }
    }

    /// A refused credential, counted against the address when it was
    /// presented ([`rules::Refused::counted`]).
    fn refused(r: rules::Refused) -> Self {
        let (status, message) = r.answer();
        Self { bad_credential: r.counted(), ..Self::new(status, message) }
    }

    fn respond(self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_secs {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.json(json!({ "error": self.message }))
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

impl HttpFront {
    /// A front end publishing through `router` and answered on `edge`,
    /// reading the time from `clock`.
    pub fn new(
        cfg: HttpConfig,
        edge: EdgeId,
        keys: Arc<KeyStore>,
        api_keys: ApiKeys,
        router: Router,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Self {
        let budget = TenantBudget::new(cfg.tenant_events_per_second, cfg.tenant_event_burst);
        let guard = AuthGuard::new(cfg.failed_auth_per_minute, AUTH_WINDOW_MS);
        Self {
            cfg,
            edge,
            keys,
            api_keys,
            router,
            store,
            pending: DashMap::new(),
            next_request: AtomicU64::new(1),
            budget,
            guard,
            clock,
            demo: None,
        }
    }

    /// Serves the chat demo and its token endpoint at `/demo`. The node
    /// calls this only when it runs with its development key.
    pub fn with_demo(mut self, demo: demo::DemoConfig) -> Self {
        self.demo = Some(web::Data::new(demo));
        self
    }

    fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The tenant of a service token; user tokens are refused.
    fn service(&self, req: &HttpRequest) -> Result<Tenant, Failure> {
        self.guarded(req, || self.check_service(req))
    }

    /// The tenant of an API key (`X-Api-Key`, or `Authorization: Bearer iris_…`).
    async fn api_key(&self, req: &HttpRequest) -> Result<Tenant, Failure> {
        let found = self.look_up_api_key(req).await?;
        self.guarded(req, || self.check_api_key(found))
    }

    /// The tenant of an API key, or else of a service token (analytics).
    async fn api_key_or_service(&self, req: &HttpRequest) -> Result<Tenant, Failure> {
        let found = self.look_up_api_key(req).await?;
        self.guarded(req, || {
            rules::key_or_token(rules::api_key(found), || self.service_tenant(req))
                .map(Tenant::from)
                .map_err(Failure::refused)
        })
    }

    /// Runs a credential check unless the request's address has failed
    /// too often this minute (then 429, the credential unread), and counts
    /// a credential presented and refused against the address. A missing
    /// credential costs nothing to refuse and is not counted.
    fn guarded(&self, req: &HttpRequest, check: impl FnOnce() -> Result<Tenant, Failure>) -> Result<Tenant, Failure> {
        if let Some(throttled) = self.throttled(req) {
            return Err(throttled);
        }
        let result = check();
        if let (Err(f), Some(ip)) = (&result, req.peer_addr().map(|a| a.ip()))
            && f.bad_credential
        {
            self.guard.failed(ip, self.now_ms());
        }
        result
    }

    /// Whether the request's address may present a credential now.
    fn allowed(&self, req: &HttpRequest) -> bool {
        req.peer_addr().is_none_or(|a| self.guard.allowed(a.ip(), self.now_ms()))
    }

    /// The 429 for an address that failed too often this minute (counted).
    fn throttled(&self, req: &HttpRequest) -> Option<Failure> {
        if self.allowed(req) {
            return None;
        }
        metrics::counter!("iris_http_auth_throttled_total").increment(1);
        Some(Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many failed authentications from this address; retry later".into(),
            retry_after_secs: Some(AUTH_WINDOW_MS as u64 / 1_000),
            bad_credential: false,
        })
    }

    fn check_service(&self, req: &HttpRequest) -> Result<Tenant, Failure> {
        self.service_tenant(req).map(Tenant::from).map_err(Failure::refused)
    }

    /// The tenant of the request's service token ([`rules::service_token`]).
    fn service_tenant(&self, req: &HttpRequest) -> Result<String, rules::Refused> {
        let token = bearer(req);
        let verified = token.and_then(|t| self.keys.verify(t).ok()).map(|id| {
            let scoped = id.has_scope(SERVICE_SCOPE);
            (id.tenant, scoped)
        });
        rules::service_token(token.is_some(), verified)
    }

    /// The API key a request presents, if any.
    fn presented_key<'r>(&self, req: &'r HttpRequest) -> Option<&'r str> {
        let header = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        rules::presented_key(header, bearer(req), KEY_PREFIX)
    }

    /// Looks the presented key up: in the key files, or (a store that keeps
    /// them, shared by the region) in the store, through the same cache.
    /// `None` inside: no key presented. An address being throttled gets no
    /// lookup (its check answers 429 unread).
    async fn look_up_api_key(&self, req: &HttpRequest) -> Result<Option<Option<String>>, Failure> {
        let Some(key) = self.presented_key(req) else { return Ok(None) };
        if !self.allowed(req) {
            return Ok(Some(None));
        }
        let now = self.now_ms();
        if !self.store.keeps_api_keys() {
            return Ok(Some(self.api_keys.tenant_of(key, now)));
        }
        let Some(hash) = key_hash(key) else { return Ok(Some(None)) };
        if let Some(hit) = self.api_keys.cached(&hash, now) {
            return Ok(Some(hit));
        }
        let tenant = self
            .store
            .api_key_tenant(&hash)
            .await
            .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, format!("API keys unavailable: {e}")))?;
        self.api_keys.remember(hash, tenant.clone(), now);
        Ok(Some(tenant))
    }

    fn check_api_key(&self, found: Option<Option<String>>) -> Result<Tenant, Failure> {
        rules::api_key(found).map(Tenant::from).map_err(Failure::refused)
    }

    /// Takes `n` events from the tenant's budget, or says when to retry.
    fn take_events(&self, tenant: &Tenant, n: usize, now: Millis) -> Result<(), Failure> {
        self.budget.take(tenant, n, now).map_err(|wait| Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("tenant over {} events per second", self.budget.per_second()),
            retry_after_secs: Some(wait),
            bad_credential: false,
        })
    }

    /// Publishes an envelope that answers to a new pending request, and
    /// waits for the answer.
    async fn ask(
        &self,
        owner: impl Into<ShardKey>,
        body: impl FnOnce(SessionAddr) -> ShardInput,
    ) -> Result<Answer, Failure> {
        let owner = owner.into();
        let failed = |f| {
            let (status, message) = rules::ask_failure(f);
            Failure::new(status, message)
        };
        rules::admit(self.pending.len(), self.cfg.max_pending).map_err(failed)?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, tx);
        let reply = SessionAddr { edge: self.edge.clone(), session: SessionId(id) };
        let env = ShardEnvelope { owner, body: body(reply), trace: None };
        // One deadline for handing over and for the answer.
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        let sent = tokio::time::timeout_at(deadline, self.router.to_shard(env)).await;
        let answer = match sent {
            Ok(Ok(())) => tokio::time::timeout_at(deadline, rx).await,
            _ => {
                self.pending.remove(&id);
                return Err(failed(rules::AskFailed::NotHandedOver));
            }
        };
        match answer {
            Ok(Ok(a)) => Ok(a),
            _ => {
                self.pending.remove(&id);
                Err(failed(rules::AskFailed::NoAnswer))
            }
        }
    }

    fn resolve(&self, request: SessionId, answer: Answer) {
        if let Some((_, tx)) = self.pending.remove(&request.0) {
            // The handler may have timed out and left.
            let _ = tx.send(answer);
        }
    }
}

/// Hands shard answers to the waiting requests.
pub async fn dispatch(front: Arc<HttpFront>, mut rx: EdgeReceiver) {
    while let Some(env) = rx.recv().await {
        for part in env.body.into_parts() {
            match part {
                EdgeInput::Reply { request, reply } => front.resolve(request, Answer::Reply(reply)),
                EdgeInput::Notice { to, notice, .. } => {
                    for id in to.as_slice() {
                        front.resolve(*id, Answer::Notice(notice.clone()));
                    }
                }
                // The front end holds no sessions to open or register again.
                EdgeInput::Welcome { .. } | EdgeInput::Resync { .. } | EdgeInput::Batch(_) => {}
            }
        }
    }
}

/// A request body, read whole within `http.body_timeout_ms` of the head and
/// at most `http.max_body_bytes` long: a client that trickles it gets 408
/// (JSON error) and its connection closes; a larger one gets 413.
pub(crate) struct Body(pub(crate) web::Bytes);

impl actix_web::FromRequest for Body {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(front) = req.app_data::<web::Data<HttpFront>>() else {
            return Box::pin(async { Err(actix_web::error::ErrorInternalServerError("no front")) });
        };
        let (limit, deadline) = (front.cfg.max_body_bytes, front.cfg.body_timeout);
        let too_large = move || actix_web::error::ErrorPayloadTooLarge(format!("body over {limit} bytes"));
        // A declared length over the limit is refused before any of it is read.
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Box::pin(async move { Err(too_large()) });
        }
        let mut payload = payload.take();
        Box::pin(async move {
            use futures::StreamExt;
            let read = async {
                let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk?;
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body.freeze())
            };
            match tokio::time::timeout(deadline, read).await {
                Ok(body) => body.map(Body),
                Err(_) => {
                    metrics::counter!("iris_http_body_timeouts_total").increment(1);
                    let mut r = Failure::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("request body not received within {} ms", deadline.as_millis()),
                    )
                    .respond();
                    r.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
                    Err(actix_web::error::InternalError::from_response("body timeout", r).into())
                }
            }
        })
    }
}

/// Parses a request body, which must be a JSON object (serde would also
/// read a struct from an array of its fields, which the API does not take).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::new(StatusCode::BAD_REQUEST, "invalid body: a JSON object is required"));
    }
    serde_json::from_slice(body).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))
}

fn reply_error(reply: ServiceReply) -> Failure {
    match reply {
        ServiceReply::Error { code, message } => Failure::new(rules::status_for(code), message),
        other => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}")),
    }
}

fn user_path(tenant: &Tenant, user: &str) -> Result<UserKey, Failure> {
    if valid_name(user) {
        Ok(UserKey { tenant: tenant.clone(), user: user.into() })
    } else {
        Err(Failure::new(StatusCode::BAD_REQUEST, "not a valid user name"))
    }
}

async fn put_contacts(
    front: web::Data<HttpFront>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Body,
) -> HttpResponse {
    let work = async {
        let tenant = front.service(&req)?;
        let owner = user_path(&tenant, &path)?;
        let list = validate::contact_list(parse(&body.0)?, front.cfg.max_contacts)
            .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, m))?;
        match front.ask(owner, |reply| ShardInput::ContactsReplace { list, reply }).await? {
            Answer::Reply(ServiceReply::ContactsSynced { upserted, removed, count }) => {
                Ok(HttpResponse::Ok().json(json!({ "upserted": upserted, "removed": removed, "count": count })))
            }
            Answer::Reply(other) => Err(reply_error(other)),
            Answer::Notice(f) => Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected {f:?}"))),
        }
    };
    work.await.unwrap_or_else(Failure::respond)
}

async fn post_verified(front: web::Data<HttpFront>, req: HttpRequest, body: Body) -> HttpResponse {
    let work = async {
        let tenant = front.service(&req)?;
        let v: validate::Verified = parse(&body.0)?;
        validate::verified(&v).map_err(|m| Failure::new(StatusCode::BAD_REQUEST, m))?;
        let owner = user_path(&tenant, &v.user)?;
        match front.ask(owner, |reply| ShardInput::IdentityVerified { channel: v.channel, reply }).await? {
            Answer::Reply(ServiceReply::IdentityVerified) => Ok(HttpResponse::Ok().json(json!({ "ok": true }))),
            Answer::Reply(other) => Err(reply_error(other)),
            Answer::Notice(f) => Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected {f:?}"))),
        }
    };
    work.await.unwrap_or_else(Failure::respond)
}

async fn put_circle(
    front: web::Data<HttpFront>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Body,
) -> HttpResponse {
    let work = async {
        let tenant = front.service(&req)?;
        let (user, circle) = path.into_inner();
        let owner = user_path(&tenant, &user)?;
        if !valid_name(&circle) {
            return Err(Failure::new(StatusCode::BAD_REQUEST, "not a valid circle name"));
        }
        let p: validate::Policy = parse(&body.0)?;
        let input =
            |session| ShardInput::CirclePolicy { session, circle, presence: p.presence, last_seen: p.last_seen };
        match front.ask(owner, input).await? {
            Answer::Notice(Notice::CirclePolicyOk { circle }) => {
                Ok(HttpResponse::Ok().json(json!({ "circle": circle })))
            }
            Answer::Notice(Notice::Refused { code, message, .. }) => {
                Err(Failure::new(rules::status_for(code), message))
            }
            other => Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected {other:?}"))),
        }
    };
    work.await.unwrap_or_else(Failure::respond)
}

#[derive(serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

async fn read_log(front: &HttpFront, req: &HttpRequest, kind: LogKind, q: LogQuery) -> Result<HttpResponse, Failure> {
    let tenant = front.service(req)?;
    let limit = rules::log_page(q.limit);
    let entries = front
        .store
        .read_log(kind, &tenant, q.after, limit)
        .await
        .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let next = entries.last().map(|e| e.seq).unwrap_or(q.after);
    let events: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|e| {
            let event: serde_json::Value = serde_json::from_slice(&e.record).unwrap_or(serde_json::Value::Null);
            json!({ "seq": e.seq, "event": event })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events, "next": next })))
}

async fn get_graph_log(front: web::Data<HttpFront>, req: HttpRequest, q: web::Query<LogQuery>) -> HttpResponse {
    read_log(&front, &req, LogKind::Graph, q.into_inner()).await.unwrap_or_else(Failure::respond)
}

async fn get_events_log(front: web::Data<HttpFront>, req: HttpRequest, q: web::Query<LogQuery>) -> HttpResponse {
    read_log(&front, &req, LogKind::Events, q.into_inner()).await.unwrap_or_else(Failure::respond)
}

async fn post_events(front: web::Data<HttpFront>, req: HttpRequest, body: Body) -> HttpResponse {
    let work = async {
        let tenant = front.api_key(&req).await?;
        let batch: validate::Batch = parse(&body.0)?;
        let limits = &front.cfg.ingest;
        rules::event_batch(batch.events.len(), limits.max_batch)
            .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, m))?;
        let now = front.now_ms();
        front.take_events(&tenant, batch.events.len(), now)?;
        let mut errors = Vec::new();
        let mut by_stream: BTreeMap<Arc<str>, Vec<iris_envelope::IngestEvent>> = BTreeMap::new();
        for (i, v) in batch.events.iter().enumerate() {
            match validate::event(i as u32, v, now, limits) {
                Ok(r) => by_stream.entry(r.stream).or_default().push(r.event),
                Err(e) => errors.push(json!({ "index": i, "error": e })),
            }
        }
        let asks = by_stream.into_iter().map(|(stream, events)| {
            let owner = ShardKey::stream(&tenant, &stream);
            front.ask(owner, move |reply| ShardInput::Ingest { stream, events, reply })
        });
        let (mut accepted, mut duplicates) = (0usize, 0usize);
        for answer in futures_join(asks).await {
            match answer? {
                Answer::Reply(ServiceReply::Ingested { accepted: a, duplicates: d }) => {
                    accepted += a.len();
                    duplicates += d.len();
                }
                Answer::Reply(other) => return Err(reply_error(other)),
                Answer::Notice(f) => {
                    return Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected {f:?}")));
                }
            }
        }
        metrics::counter!("iris_events_accepted_total").increment(accepted as u64);
        metrics::counter!("iris_events_duplicate_total").increment(duplicates as u64);
        Ok(HttpResponse::Accepted().json(json!({ "accepted": accepted, "duplicates": duplicates, "errors": errors })))
    };
    work.await.unwrap_or_else(Failure::respond)
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, h) in handles.iter_mut().enumerate() {
            if out[i].is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

#[derive(serde::Deserialize)]
struct AnalyticsQuery {
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    to: Option<i64>,
}

async fn get_analytics(front: web::Data<HttpFront>, req: HttpRequest, q: web::Query<AnalyticsQuery>) -> HttpResponse {
    let work = async {
        let tenant = front.api_key_or_service(&req).await?;
        let (from, to) = rules::analytics_range(front.now_ms(), q.from, q.to)
            .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, m))?;
        let rows = front
            .store
            .rollups(&tenant, q.event_type.as_deref(), from, to)
            .await
            .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let rollups: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(k, n)| json!({ "type": &*k.event_type, "project": &*k.project, "hour": k.hour_ms, "count": n }))
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "rollups": rollups })))
    };
    work.await.unwrap_or_else(Failure::respond)
}

/// The body of `PUT /v1/homes/{user}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HomeBody {
    /// The region, or null to fall back to the consistent hash; `None`
    /// when the field is missing, which [`rules::home_change`] refuses
    /// (found by Schemathesis against a federated node).
    #[serde(default, deserialize_with = "present")]
    region: Option<Option<String>>,
}

/// A field that was in the body, whatever its value (null included);
/// with `#[serde(default)]`, `None` means it was missing.
fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn federation(front: &HttpFront) -> Result<&Arc<iris_router::Federation>, Failure> {
    front
        .router
        .federation()
        .ok_or_else(|| Failure::new(StatusCode::CONFLICT, "this node is not part of a federation: no home regions"))
}

fn home_json(owner: &UserKey, homes: &iris_router::HomeDirectory) -> serde_json::Value {
    let (region, explicit) = homes.home_of(owner);
    json!({ "user": &*owner.user, "region": &*region, "explicit": explicit })
}

/// `GET /v1/homes/{user}`: the user's home region, and whether it was set
/// explicitly (else it is the consistent hash over the regions).
async fn get_home(front: web::Data<HttpFront>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let work = async {
        let tenant = front.service(&req)?;
        let owner = user_path(&tenant, &path)?;
        let fed = federation(&front)?;
        Ok(HttpResponse::Ok().json(home_json(&owner, fed.homes())))
    };
    work.await.unwrap_or_else(Failure::respond)
}

/// `PUT /v1/homes/{user}`: sets (or with `"region": null` clears) the
/// user's explicit home. Answered once it is durable here and queued
/// durably for every other region.
async fn put_home(front: web::Data<HttpFront>, req: HttpRequest, path: web::Path<String>, body: Body) -> HttpResponse {
    let work = async {
        let tenant = front.service(&req)?;
        let owner = user_path(&tenant, &path)?;
        let fed = federation(&front)?;
        let b: HomeBody = parse(&body.0)?;
        let region = rules::home_change(b.region, fed.homes().regions())
            .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, m))?;
        fed.set_home(owner.clone(), region)
            .await
            .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, format!("not recorded: {e}")))?;
        Ok(HttpResponse::Ok().json(home_json(&owner, fed.homes())))
    };
    work.await.unwrap_or_else(Failure::respond)
}

/// Declares the service API's routes once: [`ROUTES`] lists them, and
/// `service_routes` registers them.
macro_rules! routes {
    ($( $method:ident $path:literal => $handler:ident ),* $(,)?) => {
        /// Every route of the service API, as (method, path template):
        /// `docs/openapi.yaml` describes exactly these (a test compares).
        pub const ROUTES: &[(&str, &str)] = &[ $( (stringify!($method), $path) ),* ];

        fn service_routes(cfg: &mut web::ServiceConfig) {
            // One resource per path with each of its methods; any other
            // method on a known path gets 405 with `Allow`.
            let mut resources: Vec<(&'static str, actix_web::Resource)> = Vec::new();
            $(
                let resource = match resources.iter().position(|(p, _)| *p == $path) {
                    Some(i) => resources.remove(i).1,
                    None => web::resource($path),
                };
                resources.push(($path, resource.route(web::$method().to($handler))));
            )*
            for (path, resource) in resources {
                let allow = allowed_methods(path);
                cfg.service(resource.default_service(web::to(move || {
                    let allow = allow.clone();
                    async move { method_not_allowed(&allow) }
                })));
            }
        }
    };
}

/// The methods `path` is served with, as an `Allow` header's value.
fn allowed_methods(path: &str) -> String {
    ROUTES.iter().filter(|(_, p)| *p == path).map(|(m, _)| m.to_uppercase()).collect::<Vec<_>>().join(", ")
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut r = Failure::new(StatusCode::METHOD_NOT_ALLOWED, format!("this endpoint takes {allow}")).respond();
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(allow) {
        r.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    r
}

routes! {
    put "/v1/contacts/{user}" => put_contacts,
    post "/v1/identity/verified" => post_verified,
    put "/v1/circles/{user}/{circle}" => put_circle,
    get "/v1/graph/events" => get_graph_log,
    post "/v1/events" => post_events,
    get "/v1/events/log" => get_events_log,
    get "/v1/analytics" => get_analytics,
    get "/v1/homes/{user}" => get_home,
    put "/v1/homes/{user}" => put_home,
}

async fn not_found() -> HttpResponse {
    Failure::new(StatusCode::NOT_FOUND, "no such endpoint").respond()
}

/// The listeners of the HTTP API.
pub struct HttpListeners {
    /// Plain HTTP.
    pub http: Option<std::net::TcpListener>,
    /// HTTPS, with its TLS configuration.
    pub https: Option<(std::net::TcpListener, rustls::ServerConfig)>,
}

/// Starts the HTTP API; returns the server handle and its bound addresses
/// (no handle when no listener is configured). Must run inside an actix
/// `System`.
pub fn start(
    front: Arc<HttpFront>,
    edge_rx: EdgeReceiver,
    listeners: HttpListeners,
) -> std::io::Result<(Option<actix_web::dev::ServerHandle>, Vec<SocketAddr>)> {
    if listeners.http.is_none() && listeners.https.is_none() {
        return Ok((None, Vec::new()));
    }
    let data = web::Data::from(front.clone());
    let demo = front.demo.clone();
    let mut server = HttpServer::new(move || {
        let demo = demo.clone();
        App::new()
            .app_data(data.clone())
            // (Bodies are read by `Body`, within the size and time limits.)
            .configure(service_routes)
            // Without the dev key the demo's routes do not exist: 404.
            .configure(move |cfg| {
                if let Some(d) = demo {
                    demo::routes(cfg, d);
                }
            })
            .default_service(web::to(not_found))
    })
    .workers(1)
    // A client has this long to send a request's head (slowloris), and
    // an idle kept-alive connection is closed after as long.
    .client_request_timeout(HEADER_DEADLINE)
    .keep_alive(HEADER_DEADLINE)
    .disable_signals()
    .shutdown_timeout(5);
    let mut addrs = Vec::new();
    if let Some(l) = listeners.http {
        addrs.push(l.local_addr()?);
        server = server.listen(l)?;
    }
    if let Some((l, tls)) = listeners.https {
        addrs.push(l.local_addr()?);
        server = server.listen_rustls_0_23(l, tls)?;
    }
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tokio::spawn(dispatch(front, edge_rx));
    Ok((Some(handle), addrs))
}
