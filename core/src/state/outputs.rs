//! The shard's outputs: notices to sessions grouped by edge, outputs merged
//! per edge, what a client sees instead of an output whose write failed,
//! and the presence notices a change of view makes.

use super::*;

pub(super) fn notice_to(sessions: &[SessionAddr], notice: Notice, droppable: bool, out: &mut Vec<Output>) {
    let mut by_edge: Vec<(EdgeId, Vec<iris_envelope::SessionId>)> = Vec::new();
    for s in sessions {
        match by_edge.iter_mut().find(|(e, _)| *e == s.edge) {
            Some((_, v)) => v.push(s.session),
            None => by_edge.push((s.edge.clone(), vec![s.session])),
        }
    }
    for (edge, mut ids) in by_edge {
        let to =
            if ids.len() == 1 { Recipients::Session(ids.pop().expect("one id")) } else { Recipients::Sessions(ids) };
        out.push(Output::Edge(EdgeEnvelope {
            edge,
            body: EdgeInput::Notice { to, notice: notice.clone(), droppable },
            traces: Vec::new(),
        }));
    }
}

/// Merges each run of consecutive edge outputs into one envelope per edge
/// (in the order the edges first appear, each edge's inputs in their
/// order), so that outputs released together cost one bus record per edge.
/// Any other output ends a run: a replay's messages must not be overtaken.
/// Edges of other regions are left alone (federation batches their
/// presence itself).
pub fn coalesce_edge_outputs(outputs: Vec<Output>, region: &str) -> Vec<Output> {
    let mut out = Vec::with_capacity(outputs.len());
    type Run = Vec<(EdgeId, Vec<EdgeInput>, Vec<iris_envelope::TraceParent>)>;
    let mut run: Run = Vec::new();
    let end_run = |run: &mut Run, out: &mut Vec<Output>| {
        for (edge, mut parts, traces) in run.drain(..) {
            let body = if parts.len() == 1 { parts.pop().expect("one part") } else { EdgeInput::Batch(parts) };
            out.push(Output::Edge(EdgeEnvelope { edge, body, traces }));
        }
    };
    for o in outputs {
        match o {
            Output::Edge(env) if env.edge.region().is_none_or(|r| r == region) => {
                match run.iter_mut().find(|(e, _, _)| *e == env.edge) {
                    Some((_, parts, traces)) => {
                        parts.extend(env.body.into_parts());
                        for t in env.traces {
                            if !traces.contains(&t) && traces.len() < iris_envelope::MAX_TRACES {
                                traces.push(t);
                            }
                        }
                    }
                    None => run.push((env.edge, env.body.into_parts(), env.traces)),
                }
            }
            other => {
                end_run(&mut run, &mut out);
                out.push(other);
            }
        }
    }
    end_run(&mut run, &mut out);
    out
}

pub(super) fn reply(session: &SessionAddr, notice: Notice) -> Output {
    Output::Edge(EdgeEnvelope {
        edge: session.edge.clone(),
        body: EdgeInput::Notice { to: Recipients::Session(session.session), notice, droppable: false },
        traces: Vec::new(),
    })
}

/// A presence notice: a view of a user from this shard's memory.
pub(super) fn is_presence(o: &Output) -> bool {
    matches!(
        o,
        Output::Edge(EdgeEnvelope {
            body: EdgeInput::Notice { notice: Notice::Presence { .. } | Notice::MarkedPresence { .. }, .. },
            ..
        })
    )
}

/// Marks a presence notice with the shard's owner, so that an edge can tell
/// an earlier owner's word from a later one's (ADR 0021).
pub(super) fn mark_presence(o: &mut Output, owner: OwnerMark) {
    if let Output::Edge(EdgeEnvelope { body: EdgeInput::Notice { notice, .. }, .. }) = o
        && let Notice::Presence { user, status, last_seen } = notice
    {
        *notice = Notice::MarkedPresence { user: std::mem::take(user), status: *status, last_seen: *last_seen, owner };
    }
}

/// What a client sees instead of an output whose write failed.
pub(super) fn failed_output(o: Output) -> Option<Output> {
    match o {
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Notice { to, notice, droppable: false }, traces }) => {
            let id = match notice {
                Notice::Accepted { id, .. } => Some(id),
                Notice::ContactsOk { .. } | Notice::CirclePolicyOk { .. } => None,
                _ => return None,
            };
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Notice {
                    to,
                    notice: Notice::refused(ErrorCode::Unavailable, "storage failed; retry", id),
                    droppable: false,
                },
                traces,
            }))
        }
        // A session whose opening could not be written is refused with
        // `unavailable` (the edge closes it; the client retries).
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Welcome { session, .. }, .. }) => {
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Notice {
                    to: Recipients::Session(session),
                    notice: Notice::refused(ErrorCode::Unavailable, "storage failed; retry", None),
                    droppable: false,
                },
                traces: Vec::new(),
            }))
        }
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Reply { request, .. }, .. }) => {
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Reply {
                    request,
                    reply: ServiceReply::Error {
                        code: ErrorCode::Unavailable,
                        message: "storage failed; retry".into(),
                    },
                },
                traces: Vec::new(),
            }))
        }
        // An ack is the client's word, true whether or not its mark was
        // stored: the senders hear their receipts, and the reset's repair
        // writes the mark from memory (no later ack would cover the range
        // again, ADR 0004 point 7).
        Output::Read(read @ Read::Receipts { .. }) => Some(Output::Read(read)),
        _ => None,
    }
}

pub(super) fn presence_notice(user: &str, view: View) -> Notice {
    Notice::Presence { user: user.to_owned(), status: view.status, last_seen: view.last_seen }
}

/// Tells every subscriber what it may see of `me` now, whether or not it
/// was told so before.
pub(super) fn announce_presence(me: &str, user: &mut UserState, out: &mut Vec<Output>) {
    for sub in &mut user.subscribers {
        sub.last = UNTOLD;
    }
    notify_subscribers(me, user, out);
}

/// Sends each subscriber whose view changed one notice; subscribers on the
/// same edge who see the same thing share one envelope.
pub(super) fn notify_subscribers(me: &str, user: &mut UserState, out: &mut Vec<Output>) {
    let mut groups: Vec<(View, Vec<SessionAddr>)> = Vec::new();
    for i in 0..user.subscribers.len() {
        let view = user.view_for(me, &user.subscribers[i].viewer);
        let sub = &mut user.subscribers[i];
        if view != sub.last {
            sub.last = view;
            match groups.iter_mut().find(|(v, _)| *v == view) {
                Some((_, s)) => s.push(sub.session.clone()),
                None => groups.push((view, vec![sub.session.clone()])),
            }
        }
    }
    for (view, sessions) in groups {
        notice_to(&sessions, presence_notice(me, view), false, out);
    }
}

pub(super) fn service_reply(to: &SessionAddr, reply: ServiceReply) -> Output {
    Output::Edge(EdgeEnvelope {
        edge: to.edge.clone(),
        body: EdgeInput::Reply { request: to.session, reply },
        traces: Vec::new(),
    })
}

/// The notice of one replayed message.
pub(super) fn message_notice(m: StoredMessage) -> Notice {
    Notice::Message { seq: m.seq, msg_id: m.msg_id.to_string(), from: m.from.to_string(), body: m.body, ts: m.ts }
}
