//! The inbox: sends (dedup of retries, the next seq, the message id) and
//! what a client asks to catch up on.

use super::*;

impl ShardState {
    /// A message to `owner` from `from`: accepted once (a retry of the same
    /// client id gets the same answer), given the next inbox seq, written,
    /// and delivered to the recipient's sessions once durable.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        now: Millis,
        owner: &UserKey,
        from: Arc<str>,
        client_id: Arc<str>,
        body: bytes::Bytes,
        to_session: SessionAddr,
        dedup: Option<DedupRecord>,
        fx: &mut Effects,
    ) {
        let key = DedupKey { sender: owner.peer(&from), client_id: client_id.clone() };
        let in_flight = self.inflight_dedup.get(&key).map(|(r, t)| (r.clone(), *t));
        let earlier = in_flight.clone().map(|(r, _)| r).or_else(|| self.recent_dedup.get(&key).cloned()).or(dedup);
        if let Some(rec) = earlier {
            let accepted = reply(
                &to_session,
                Notice::Accepted { id: client_id.to_string(), msg_id: rec.msg_id.to_string(), ts: rec.ts },
            );
            match in_flight {
                // A retry of a send still being written: its answer
                // stands or falls with that write.
                Some((_, original)) => fx.dependent.push((original, accepted)),
                None => fx.out.push(accepted),
            }
        } else if self.tickets.poisoned() {
            fx.out.push(reply(
                &to_session,
                Notice::refused(ErrorCode::Unavailable, "storage failed; retry", Some(client_id.to_string())),
            ));
        } else {
            let user = self.users.get_mut(owner).expect("loaded above");
            user.head += 1;
            let seq = user.head;
            let sessions = user.sessions.clone();
            let msg_id = self.next_msg_id(now);
            let message =
                StoredMessage { seq, msg_id: msg_id.clone(), from: from.clone(), body: body.clone(), ts: now };
            let record = DedupRecord { msg_id: msg_id.clone(), ts: now, to: owner.user.clone(), seq };
            fx.batch.push(WriteOp::Message { user: owner.clone(), message });
            fx.batch.push(WriteOp::Dedup { key: key.clone(), record: record.clone() });
            let ticket = self.tickets.next();
            self.inflight_order.push_back((ticket, key.clone()));
            self.inflight_dedup.insert(key, (record, ticket));
            fx.out.push(reply(
                &to_session,
                Notice::Accepted { id: client_id.to_string(), msg_id: msg_id.to_string(), ts: now },
            ));
            let notice = Notice::Message { seq, msg_id: msg_id.to_string(), from: from.to_string(), body, ts: now };
            notice_to(&sessions, notice, false, &mut fx.out);
        }
    }

    /// A client asks for its inbox after `after`.
    pub(super) fn sync(
        &mut self,
        owner: &UserKey,
        session: SessionAddr,
        after: InboxSeq,
        limit: u32,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        fx.out.push(Output::Read(Read::Replay {
            user: owner.clone(),
            session,
            after,
            limit: limit.clamp(1, iris_types::MAX_PAGE_LIMIT),
            inbox_head: user.head,
            always_synced: true,
        }));
    }

    /// A UUIDv7: the time, then 12 bits of shard (the version nibble takes
    /// the top 4 bits of the first byte, so shards are capped at 4,096), 30
    /// bits of per-start seed (the variant takes 2 bits of the third byte)
    /// and a 32-bit counter. Unique across shards, restarts and time.
    pub(super) fn next_msg_id(&mut self, now: Millis) -> Arc<str> {
        self.id_counter = self.id_counter.wrapping_add(1);
        let shard = self.config.shard.0 & 0x0fff;
        let seed = self.config.id_seed & 0x3fff_ffff;
        let mut rand = [0u8; 10];
        rand[0] = (shard >> 8) as u8;
        rand[1] = shard as u8;
        rand[2..6].copy_from_slice(&seed.to_be_bytes());
        rand[6..].copy_from_slice(&self.id_counter.to_be_bytes());
        let id = uuid::Builder::from_unix_timestamp_millis(now.max(0) as u64, &rand).into_uuid();
        Arc::from(id.hyphenated().to_string())
    }
}
