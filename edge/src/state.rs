//! The session state machine: everything a session decides, with no I/O.
//!
//! Inputs: raw frames from the transport, the result of token verification,
//! the shard's welcome, and the passage of time. Outputs: frames to write,
//! envelopes to route, a token to verify, a registration in the local
//! presence map, or a close. The transport (WebSocket today, QUIC later)
//! only pumps bytes through this.

use iris_auth::{Identity, valid_name};
use iris_envelope::{InboxSeq, Millis, OwnerMark, SessionAddr, ShardEnvelope, ShardInput, UserKey};
use iris_protocol::{
    ClientFrame, ContactEntry, DEFAULT_SYNC_LIMIT, DecodeError, Encoding, ErrorCode, MAX_CLIENT_ID_CHARS,
    MAX_PAGE_LIMIT, Ping, ServerFrame, Welcome,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Garbage frames in a row that close a session.
pub const MAX_GARBAGE_STREAK: u8 = 3;

/// Settings every session of an edge shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This node's id, shown in `welcome`.
    pub node: String,
    /// This node's region, shown in `welcome`.
    pub region: String,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Sustained frames per second.
    pub frames_per_second: u32,
    /// Burst above the sustained rate.
    pub frame_burst: u32,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Time allowed for a valid `hello`.
    pub hello_timeout_ms: u64,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Items in one list frame.
    pub max_list_items: usize,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No valid `hello`, or a bad token.
    Unauthorized,
    /// Frames that are not frames at all, three in a row.
    Garbage,
    /// Nothing received for two heartbeats.
    Timeout,
    /// The session could not keep up with its deliveries.
    Overloaded,
    /// The node is shutting down.
    Shutdown,
    /// The client closed, or the connection broke (or stopped reading).
    ClientGone,
    /// A frame larger than the transport reads whole.
    TooLarge,
    /// The node could not open the session (storage unavailable).
    Unavailable,
    /// The session was refused by a limit (sessions per user).
    Refused,
    /// The session was refused: its tenant was deleted (barred, ADR 0030).
    TenantBarred,
}

impl CloseReason {
    /// The close code every transport sends (WebSocket close frames and QUIC
    /// application close codes use the same numbers; docs/protocol.md).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ClientGone => 1000,
            CloseReason::Timeout | CloseReason::Shutdown => 1001,
            CloseReason::Garbage => 1002,
            CloseReason::Unauthorized | CloseReason::Refused | CloseReason::TenantBarred => 1008,
            CloseReason::TooLarge => 1009,
            CloseReason::Overloaded | CloseReason::Unavailable => 1013,
        }
    }

    /// A short reason for close frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::Garbage => "too many undecodable frames",
            CloseReason::Timeout => "heartbeat timeout",
            CloseReason::Overloaded => "session fell behind; resume with resume_after",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::ClientGone => "closed",
            CloseReason::TooLarge => "frame too large",
            CloseReason::Unavailable => "session could not be opened; retry",
            CloseReason::Refused => "session refused: limit reached",
            CloseReason::TenantBarred => "session refused: tenant deleted",
        }
    }
}

/// Why a token did not open a session, as the shell found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// The token did not verify (signature, expiry, claims).
    Invalid,
    /// Too many failures from this address lately: not even checked.
    Throttled,
}

/// What a hello's token comes to, as the shell checks it: refused unread
/// when its address failed too often lately (`allowed` is false), else
/// what `verify` says, any error of which is `Invalid` (its reason stays
/// in the server's log, never in the client's answer).
pub fn token_checked<E>(allowed: bool, verify: impl FnOnce() -> Result<Identity, E>) -> Result<Identity, AuthRefusal> {
    if !allowed {
        return Err(AuthRefusal::Throttled);
    }
    verify().map_err(|_| AuthRefusal::Invalid)
}

/// Why the shell could not route a [`SessionOutput::Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRefusal {
    /// The tenant is over its sends per second on this edge.
    TenantBudget {
        /// The budget.
        per_second: u32,
    },
    /// The bus refused it (the node is shutting down).
    Unavailable,
}

/// Something the transport carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    /// Write a frame.
    Send(ServerFrame),
    /// Route an envelope to a shard. `ephemeral` ones may be dropped under
    /// load; the others wait for room, and one the shell cannot route comes
    /// back through [`SessionState::route_refused`].
    Route {
        /// The envelope.
        env: ShardEnvelope,
        /// May be dropped when the bus is full.
        ephemeral: bool,
        /// Counts against the tenant's send budget (shared by every session
        /// of the tenant on this edge, so the shell keeps it).
        charged: bool,
    },
    /// Verify this token (unless the source address is throttled) and call
    /// [`SessionState::authenticated`].
    Verify(String),
    /// A failed authentication: the shell counts it against the source
    /// address (failed-auth throttling).
    AuthFailed,
    /// Register the session under this user in the local presence map.
    Register(UserKey),
    /// Close the session.
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Authenticating,
    AwaitWelcome,
    Open,
    Closed,
}

/// One session's state.
pub struct SessionState {
    cfg: Arc<SessionConfig>,
    addr: SessionAddr,
    phase: Phase,
    user: Option<UserKey>,
    encoding: Option<Encoding>,
    resume_after: Option<InboxSeq>,
    /// The highest seq this session was sent, or what it had at welcome:
    /// where a shard that lost track of the session resumes it.
    sent_upto: InboxSeq,
    garbage_streak: u8,
    opened_at: Millis,
    last_rx: Millis,
    tokens: f64,
    last_refill: Millis,
    /// Users followed, each with the owner whose presence word about them
    /// was written last ([`SessionState::presence_from`]).
    subscriptions: HashMap<Arc<str>, OwnerMark>,
    out: VecDeque<SessionOutput>,
}

fn err(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> SessionOutput {
    SessionOutput::Send(ServerFrame::error(code, message, id))
}

impl SessionState {
    /// A new session that has just connected.
    pub fn new(cfg: Arc<SessionConfig>, addr: SessionAddr, now: Millis) -> Self {
        let burst = f64::from(cfg.frame_burst);
        Self {
            cfg,
            addr,
            phase: Phase::AwaitHello,
            user: None,
            encoding: None,
            resume_after: None,
            sent_upto: 0,
            garbage_streak: 0,
            opened_at: now,
            last_rx: now,
            tokens: burst,
            last_refill: now,
            subscriptions: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The connection's encoding, once its first frame decided it.
    pub fn encoding(&self) -> Option<Encoding> {
        self.encoding
    }

    /// The user, once authenticated.
    pub fn user(&self) -> Option<&UserKey> {
        self.user.as_ref()
    }

    /// True while the transport should read client frames (not while the
    /// token is checked or the shard's welcome is awaited).
    pub fn wants_input(&self) -> bool {
        matches!(self.phase, Phase::AwaitHello | Phase::Open)
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True once `welcome` was sent.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Anything received (WebSocket pings included) keeps the session alive.
    pub fn touch(&mut self, now: Millis) {
        self.last_rx = now;
    }

    /// When [`SessionState::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Millis {
        match self.phase {
            Phase::AwaitHello | Phase::Authenticating | Phase::AwaitWelcome => {
                self.opened_at + self.cfg.hello_timeout_ms as Millis
            }
            Phase::Open => self.last_rx + 2 * self.cfg.heartbeat_ms as Millis,
            Phase::Closed => Millis::MAX,
        }
    }

    /// Checks the hello and heartbeat deadlines.
    pub fn handle_timeout(&mut self, now: Millis) {
        if now < self.poll_timeout() {
            return;
        }
        match self.phase {
            Phase::AwaitHello | Phase::Authenticating => {
                self.out.push_back(err(ErrorCode::Unauthorized, "no valid hello in time", None));
                self.close(CloseReason::Unauthorized);
            }
            Phase::AwaitWelcome => {
                // The token was good; the node could not open the session in time.
                self.out.push_back(err(ErrorCode::Unavailable, "session could not be opened in time; retry", None));
                self.close(CloseReason::Unavailable);
            }
            Phase::Open => self.close(CloseReason::Timeout),
            Phase::Closed => {}
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.out.push_back(SessionOutput::Close(reason));
        }
    }

    /// Ends the session from outside (shutdown, overload, client gone).
    pub fn close_now(&mut self, reason: CloseReason) {
        self.close(reason);
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        let out = self.out.pop_front();
        // An idle session holds no output buffer: a burst (the opening,
        // a replay) grows it, and it is given back once drained rather than
        // kept at its peak for the connection's life.
        if out.is_none() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        out
    }

    /// Are outputs waiting for `poll_output`?
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Envelopes that tell shards the session is gone (after close).
    pub fn farewell(&mut self) -> Vec<ShardEnvelope> {
        let Some(user) = self.user.take() else { return Vec::new() };
        let mut v: Vec<ShardEnvelope> = self
            .subscriptions
            .drain()
            .map(|(target, _)| ShardEnvelope {
                owner: user.peer(&target).into(),
                body: ShardInput::Unsubscribe { viewer: user.user.clone(), session: self.addr.clone() },
                trace: None,
            })
            .collect();
        v.push(ShardEnvelope {
            owner: user.into(),
            body: ShardInput::SessionClosed { session: self.addr.clone() },
            trace: None,
        });
        v
    }

    /// The result of verifying the `hello` token. Service tokens call the
    /// service API; they never open a user's session.
    pub fn authenticated(&mut self, result: Result<Identity, AuthRefusal>) {
        if self.phase != Phase::Authenticating {
            return;
        }
        let result = match result {
            Ok(id) if id.has_scope(iris_auth::SERVICE_SCOPE) => Err(AuthRefusal::Invalid),
            other => other,
        };
        match result {
            Ok(id) => {
                let user = UserKey::new(id.tenant, id.user);
                self.user = Some(user.clone());
                self.phase = Phase::AwaitWelcome;
                self.out.push_back(SessionOutput::Register(user.clone()));
                self.route(
                    user,
                    ShardInput::SessionOpened { session: self.addr.clone(), resume_after: self.resume_after },
                );
            }
            Err(refusal) => {
                // A throttled address is not charged again for this one.
                if refusal == AuthRefusal::Invalid {
                    self.out.push_back(SessionOutput::AuthFailed);
                }
                self.out.push_back(err(ErrorCode::Unauthorized, "invalid token", None));
                self.close(CloseReason::Unauthorized);
            }
        }
    }

    /// The shard registered the session: send `welcome`.
    pub fn welcomed(&mut self, now: Millis, inbox_head: InboxSeq) {
        if self.phase != Phase::AwaitWelcome {
            return;
        }
        let user = self.user.as_ref().expect("authenticated before welcome");
        self.phase = Phase::Open;
        self.last_rx = now;
        // Without resume_after, what the inbox held before is history the
        // client may `sync`; with it, the replay raises this as it arrives.
        self.sent_upto = self.resume_after.unwrap_or(inbox_head);
        self.out.push_back(SessionOutput::Send(ServerFrame::Welcome(Welcome {
            user: user.user.to_string(),
            session: format!("{}:{}", self.addr.edge, self.addr.session),
            node: self.cfg.node.clone(),
            region: self.cfg.region.clone(),
            heartbeat_ms: self.cfg.heartbeat_ms,
            inbox_head,
        })));
    }

    /// A message frame with this seq was written to the client.
    pub fn sent_message(&mut self, seq: InboxSeq) {
        self.sent_upto = self.sent_upto.max(seq);
    }

    /// A frame from the shards was written to the client: a message moves
    /// the resume mark; an error before `welcome` means the shard could not
    /// open the session (a limit, or storage), and the session closes.
    pub fn wrote_from_shard(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::Message(m) => self.sent_message(m.seq),
            ServerFrame::Error(e) if matches!(self.phase, Phase::AwaitWelcome | Phase::Authenticating) => {
                let reason = match e.code {
                    ErrorCode::RateLimited => CloseReason::Refused,
                    ErrorCode::Forbidden => CloseReason::TenantBarred,
                    _ => CloseReason::Unavailable,
                };
                self.close(reason);
            }
            _ => {}
        }
    }

    /// A presence word about a followed user, from the shard owner `owner`:
    /// whether to write it. A word from an earlier owner of that user's
    /// shard than the one whose word was written last is a zombie's, told
    /// from memory its successor has since changed (ADR 0021): dropped, so
    /// the follower keeps the newer owner's word. The first word, a word
    /// from another region (the user's home moved), and a word about a user
    /// not followed (any more) are written.
    pub fn presence_from(&mut self, frame: &ServerFrame, owner: OwnerMark) -> bool {
        let ServerFrame::Presence(p) = frame else { return true };
        match self.subscriptions.get_mut(p.user.as_str()) {
            Some(seen) if owner.is_before(*seen) => false,
            Some(seen) => {
                *seen = owner;
                true
            }
            None => true,
        }
    }

    /// The session's delivery queue was closed by the edge: it is shutting
    /// down, or the session fell too far behind its deliveries.
    pub fn queue_closed(&mut self, shutting_down: bool) {
        self.close_now(if shutting_down { CloseReason::Shutdown } else { CloseReason::Overloaded });
    }

    /// What a refusal of `env` names: a send's client id (other frames carry
    /// none). Taken before the envelope is handed on, so that the shell
    /// keeps no copy of it.
    pub fn refusal_id(env: &ShardEnvelope) -> Option<Arc<str>> {
        match &env.body {
            ShardInput::Send { client_id, .. } => Some(client_id.clone()),
            _ => None,
        }
    }

    /// The shell could not route an envelope: the client is told, naming
    /// the send it refers to (other frames carry no id).
    /// `id` is [`SessionState::refusal_id`] of the envelope.
    pub fn route_refused(&mut self, id: Option<Arc<str>>, refusal: RouteRefusal) {
        let id = id.map(|id| id.to_string());
        self.out.push_back(match refusal {
            RouteRefusal::TenantBudget { per_second } => {
                err(ErrorCode::RateLimited, format!("tenant over {per_second} sends per second"), id)
            }
            RouteRefusal::Unavailable => err(ErrorCode::Unavailable, "node is shutting down", id),
        });
    }

    /// A shard lost track of this edge's sessions (it moved or restarted)
    /// and asked them to register again: `owns` says whether that shard
    /// owns a user. The session resumes there if its user is one of them
    /// (missed messages are replayed after [`SessionState::sent_message`]'s
    /// mark), and makes again each of its subscriptions to users there.
    /// A session still opening needs nothing: its opening is on its way.
    pub fn resync(&mut self, owns: impl Fn(&UserKey) -> bool) {
        if self.phase != Phase::Open {
            return;
        }
        let user = self.user.clone().expect("open sessions are authenticated");
        if owns(&user) {
            self.route(user.clone(), ShardInput::SessionResumed { session: self.addr.clone(), after: self.sent_upto });
        }
        // Each subscription made again is answered by the shard's owner
        // now: what was seen of earlier owners is forgotten, so that an
        // owner epoch that went back (a store restored from a backup) cannot
        // silence the new owner for good. A zombie's word that lands before
        // the answer is replaced by it; one after it is dropped.
        let targets: Vec<UserKey> = self
            .subscriptions
            .iter_mut()
            .filter_map(|(t, seen)| {
                let target = user.peer(t);
                owns(&target).then(|| {
                    *seen = OwnerMark::default();
                    target
                })
            })
            .collect();
        for target in targets {
            self.route(target, ShardInput::Subscribe { viewer: user.user.clone(), session: self.addr.clone() });
        }
    }

    fn route(&mut self, owner: UserKey, body: ShardInput) {
        let ephemeral = body.is_ephemeral();
        // Sends are what the tenant's budget counts.
        let charged = matches!(body, ShardInput::Send { .. });
        self.out.push_back(SessionOutput::Route {
            env: ShardEnvelope { owner: owner.into(), body, trace: None },
            ephemeral,
            charged,
        });
    }

    fn take_token(&mut self, now: Millis) -> bool {
        let elapsed = (now - self.last_refill).max(0) as f64 / 1_000.0;
        self.last_refill = now;
        let burst = f64::from(self.cfg.frame_burst);
        self.tokens = (self.tokens + elapsed * f64::from(self.cfg.frames_per_second)).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one frame from the client. `kind` is what the transport saw
    /// (WebSocket text or binary; QUIC: a payload starting with `{` is JSON).
    /// Returns the frame's type for metrics (`invalid` when it did not decode).
    pub fn handle_frame(&mut self, now: Millis, bytes: &[u8], kind: Encoding) -> &'static str {
        self.last_rx = now;
        let encoding = *self.encoding.get_or_insert(kind);
        match self.phase {
            Phase::AwaitHello => self.handle_hello(bytes, encoding),
            Phase::Open => {
                let decoded = ClientFrame::decode(bytes, encoding);
                let ty = decoded.as_ref().map(ClientFrame::type_name).unwrap_or("invalid");
                if !self.take_token(now) {
                    let id = match &decoded {
                        Ok(f) => f.id().map(str::to_owned),
                        Err(e) => e.id().map(str::to_owned),
                    };
                    self.out.push_back(err(ErrorCode::RateLimited, "too many frames; slow down", id));
                    return ty;
                }
                match decoded {
                    Ok(frame) => {
                        self.garbage_streak = 0;
                        self.handle_client_frame(now, frame);
                    }
                    Err(e) => self.decode_error(e),
                }
                ty
            }
            Phase::Authenticating | Phase::AwaitWelcome | Phase::Closed => "ignored",
        }
    }

    /// The frame was larger than the transport reads whole: say so and close.
    pub fn frame_too_large(&mut self) {
        self.out.push_back(err(ErrorCode::TooLarge, "frame exceeds the frame size limit", None));
        self.close(CloseReason::TooLarge);
    }

    fn handle_hello(&mut self, bytes: &[u8], encoding: Encoding) -> &'static str {
        match ClientFrame::decode(bytes, encoding) {
            Ok(ClientFrame::Hello(h)) => {
                self.resume_after = h.resume_after;
                self.phase = Phase::Authenticating;
                self.out.push_back(SessionOutput::Verify(h.token));
                "hello"
            }
            _ => {
                self.out.push_back(err(ErrorCode::Unauthorized, "the first frame must be hello", None));
                self.close(CloseReason::Unauthorized);
                "invalid"
            }
        }
    }

    fn decode_error(&mut self, e: DecodeError) {
        match e {
            DecodeError::Garbage(what) => {
                self.garbage_streak += 1;
                self.out.push_back(err(ErrorCode::BadFrame, format!("frame is not {what}"), None));
                if self.garbage_streak >= MAX_GARBAGE_STREAK {
                    self.close(CloseReason::Garbage);
                }
            }
            DecodeError::UnknownType { ty, id } => {
                self.garbage_streak = 0;
                self.out.push_back(err(ErrorCode::UnknownType, format!("unknown type {ty:?}"), id));
            }
            DecodeError::BadFrame { reason, id } => {
                self.garbage_streak = 0;
                self.out.push_back(err(ErrorCode::BadFrame, reason, id));
            }
        }
    }

    fn check_names<'a>(&mut self, names: impl IntoIterator<Item = &'a String>, what: &str) -> bool {
        let mut n = 0;
        for name in names {
            n += 1;
            if !valid_name(name) {
                self.out.push_back(err(ErrorCode::BadFrame, format!("{what}: invalid user name {name:?}"), None));
                return false;
            }
        }
        if n > self.cfg.max_list_items {
            self.out.push_back(err(
                ErrorCode::TooLarge,
                format!("{what}: at most {} items", self.cfg.max_list_items),
                None,
            ));
            return false;
        }
        true
    }

    fn handle_client_frame(&mut self, now: Millis, frame: ClientFrame) {
        let user = self.user.clone().expect("open sessions are authenticated");
        match frame {
            ClientFrame::Hello(_) => self.out.push_back(err(ErrorCode::BadFrame, "already authenticated", None)),
            ClientFrame::Send(s) => {
                let chars = s.id.chars().count();
                if chars == 0 || chars > MAX_CLIENT_ID_CHARS {
                    self.out.push_back(err(ErrorCode::BadFrame, "id must be 1-64 characters", Some(s.id)));
                } else if !valid_name(&s.to) {
                    self.out.push_back(err(ErrorCode::BadFrame, "invalid recipient", Some(s.id)));
                } else if s.body.len() > self.cfg.max_body_bytes {
                    let m = format!("body is {} bytes; the limit is {}", s.body.len(), self.cfg.max_body_bytes);
                    self.out.push_back(err(ErrorCode::TooLarge, m, Some(s.id)));
                } else {
                    let owner = user.peer(&s.to);
                    self.route(
                        owner,
                        ShardInput::Send {
                            from: user.user.clone(),
                            client_id: s.id.into(),
                            body: s.body.0,
                            reply: self.addr.clone(),
                        },
                    );
                }
            }
            ClientFrame::Ack(a) => self.route(user, ShardInput::Ack { up_to: a.up_to, read: false }),
            ClientFrame::Read(a) => self.route(user, ShardInput::Ack { up_to: a.up_to, read: true }),
            ClientFrame::Sync(s) => {
                let limit = s.limit.unwrap_or(DEFAULT_SYNC_LIMIT).clamp(1, MAX_PAGE_LIMIT);
                self.route(user, ShardInput::Sync { session: self.addr.clone(), after: s.after.unwrap_or(0), limit });
            }
            // Stamped here, where the user set it: the shard keeps the
            // newest (ADR 0032).
            ClientFrame::Presence(p) => {
                self.route(user, ShardInput::SetPresenceAt { session: self.addr.clone(), status: p.status, at: now })
            }
            ClientFrame::Subscribe(u) => {
                if !self.check_names(&u.users, "subscribe") {
                    return;
                }
                let mut seen = HashSet::new();
                let mut refused = 0usize;
                for name in u.users {
                    if !seen.insert(name.clone()) {
                        continue;
                    }
                    let target: Arc<str> = name.as_str().into();
                    if !self.subscriptions.contains_key(&target) {
                        if self.subscriptions.len() >= self.cfg.max_subscriptions {
                            refused += 1;
                            continue;
                        }
                        self.subscriptions.insert(target, OwnerMark::default());
                    }
                    self.route(
                        user.peer(&name),
                        ShardInput::Subscribe { viewer: user.user.clone(), session: self.addr.clone() },
                    );
                }
                if refused > 0 {
                    let m =
                        format!("{refused} subscriptions refused: at most {} per session", self.cfg.max_subscriptions);
                    self.out.push_back(err(ErrorCode::RateLimited, m, None));
                }
            }
            ClientFrame::Unsubscribe(u) => {
                if !self.check_names(&u.users, "unsubscribe") {
                    return;
                }
                for name in u.users {
                    if self.subscriptions.remove(name.as_str()).is_some() {
                        self.route(
                            user.peer(&name),
                            ShardInput::Unsubscribe { viewer: user.user.clone(), session: self.addr.clone() },
                        );
                    }
                }
            }
            ClientFrame::Contacts(c) => {
                let names = c.upsert.iter().map(|e| &e.user).chain(c.remove.iter());
                if !self.check_names(names, "contacts") {
                    return;
                }
                let bad_circle = c.upsert.iter().filter_map(|e| e.circle.as_ref()).find(|circle| !valid_name(circle));
                if let Some(circle) = bad_circle {
                    self.out.push_back(err(ErrorCode::BadFrame, format!("invalid circle {circle:?}"), None));
                    return;
                }
                let upsert: Vec<ContactEntry> = c.upsert;
                self.route(user, ShardInput::Contacts { session: self.addr.clone(), upsert, remove: c.remove });
            }
            ClientFrame::CirclePolicy(p) => {
                if !valid_name(&p.circle) {
                    self.out.push_back(err(ErrorCode::BadFrame, "invalid circle", None));
                    return;
                }
                self.route(
                    user,
                    ShardInput::CirclePolicy {
                        session: self.addr.clone(),
                        circle: p.circle,
                        presence: p.presence,
                        last_seen: p.last_seen,
                    },
                );
            }
            ClientFrame::Typing(t) => {
                if valid_name(&t.to) {
                    self.route(user.peer(&t.to), ShardInput::Typing { from: user.user.clone(), state: t.state });
                } else {
                    self.out.push_back(err(ErrorCode::BadFrame, "invalid recipient", None));
                }
            }
            ClientFrame::Ping(p) => self.out.push_back(SessionOutput::Send(ServerFrame::Pong(Ping { ts: p.ts }))),
        }
    }
}

#[cfg(test)]
mod tests;
