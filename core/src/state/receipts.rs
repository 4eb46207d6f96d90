//! Receipts: acknowledgements turned into receipts for the senders, held
//! for a sender who is offline; and the reads that replays and receipts
//! need, with what follows from their answers.

use super::*;

impl ShardState {
    /// The recipient acknowledged (delivered) or read up to `up_to`.
    pub(super) fn ack(&mut self, owner: &UserKey, up_to: InboxSeq, read: bool, fx: &mut Effects) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let up = up_to.min(user.head);
        if read {
            if up > user.meta.read {
                fx.out.push(Output::Read(Read::Receipts {
                    user: owner.clone(),
                    from: user.meta.read,
                    to: up,
                    state: ReceiptState::Read,
                }));
                user.meta.read = up;
                user.meta.acked = user.meta.acked.max(up);
                fx.batch.push(self.records.meta(owner, user));
            }
        } else if up > user.meta.acked {
            // Messages already read got their (stronger) receipt.
            let from = user.meta.acked.max(user.meta.read);
            if up > from {
                fx.out.push(Output::Read(Read::Receipts {
                    user: owner.clone(),
                    from,
                    to: up,
                    state: ReceiptState::Delivered,
                }));
            }
            user.meta.acked = up;
            fx.batch.push(self.records.meta(owner, user));
        }
    }

    /// A receipt for one of `owner`'s messages: to their sessions, or kept
    /// until one opens.
    pub(super) fn receipt(
        &mut self,
        owner: &UserKey,
        msg_id: Arc<str>,
        by: Arc<str>,
        state: ReceiptState,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        if user.sessions.is_empty() {
            fx.batch.push(WriteOp::Receipt {
                user: owner.clone(),
                receipt: iris_storage::PendingReceipt { msg_id, by, state },
            });
        } else {
            let notice = Notice::Receipt { msg_id: msg_id.to_string(), by: by.to_string(), state };
            notice_to(&user.sessions, notice, false, &mut fx.out);
        }
    }

    /// What the shell must ask the store for `read`.
    pub fn query<'a>(&self, read: &'a Read) -> Query<'a> {
        match read {
            Read::Replay { user, after, limit, .. } => {
                Query::Inbox { user, after: *after, limit: *limit as usize, max_bytes: self.config.page_max_bytes }
            }
            Read::Receipts { user, from, to, .. } => Query::Range { user, from: *from, to: *to, limit: RECEIPT_PAGE },
            Read::FlushReceipts { user, .. } => Query::PendingReceipts { user, limit: PENDING_RECEIPTS_MAX },
        }
    }

    /// Takes the store's answer to a [`Read`] and decides what follows: the
    /// notices of a replay page and its `synced`; receipts to the senders'
    /// shards and the next page's read; a returning sender's pending
    /// receipts, and forgetting them through the ticket order like every
    /// other write.
    pub fn read_done(&mut self, read: Read, result: ReadResult) -> ReadOutcome {
        let mut o = ReadOutcome::default();
        let (Read::Replay { user, .. } | Read::Receipts { user, .. } | Read::FlushReceipts { user, .. }) = &read;
        if self.is_barred(&user.tenant) {
            return o; // asked before the bar: nothing of the tenant goes out or is written
        }
        match (read, result) {
            (Read::Replay { session, after, inbox_head, always_synced, .. }, ReadResult::Inbox(r)) => {
                let to = std::slice::from_ref(&session);
                match r {
                    Ok(page) => {
                        let last = page.messages.last().map(|m| m.seq).unwrap_or(after);
                        let more = page.more;
                        for m in page.messages {
                            notice_to(to, message_notice(m), false, &mut o.outputs);
                        }
                        // A replay nobody asked for ends silently unless the
                        // client must go on with `sync` (PROTOCOL: synced
                        // with more).
                        if always_synced || more {
                            let synced = Notice::Synced { inbox_head: inbox_head.max(last), more };
                            notice_to(to, synced, false, &mut o.outputs);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "replay read failed");
                        let notice = Notice::refused(ErrorCode::Unavailable, "history unavailable; retry sync", None);
                        notice_to(to, notice, false, &mut o.outputs);
                    }
                }
            }
            (Read::Receipts { user, to, state, .. }, ReadResult::Range(r)) => match r {
                Ok(page) => {
                    let Some(last) = page.last().map(|m| m.seq) else { return o };
                    for m in page {
                        o.outputs.push(Output::Shard(ShardEnvelope {
                            owner: user.peer(&m.from).into(),
                            body: ShardInput::Receipt { msg_id: m.msg_id, by: user.user.clone(), state },
                            trace: None,
                        }));
                    }
                    if last < to {
                        o.outputs.push(Output::Read(Read::Receipts { user, from: last, to, state }));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "receipt read failed; receipts dropped"),
            },
            (Read::FlushReceipts { user, session }, ReadResult::PendingReceipts(r)) => match r {
                Ok(pending) if !pending.is_empty() => {
                    let to = std::slice::from_ref(&session);
                    let mut ids = Vec::with_capacity(pending.len());
                    for r in pending {
                        let notice =
                            Notice::Receipt { msg_id: r.msg_id.to_string(), by: r.by.to_string(), state: r.state };
                        notice_to(to, notice, false, &mut o.outputs);
                        ids.push(r.msg_id);
                    }
                    let mut batch = WriteBatch::default();
                    batch.push(WriteOp::ReceiptsDelivered { user, msg_ids: ids });
                    o.commit = Some((self.issue(), batch));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pending receipts unreadable; kept for next time"),
            },
            (read, result) => {
                debug_assert!(false, "{read:?} answered with {result:?}");
                tracing::error!(?read, "a read answered with the wrong kind of result; dropped");
            }
        }
        o
    }
}
