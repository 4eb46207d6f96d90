//! Notices from shards become client frames here, and only here (ADR 0020):
//! the one place the domain's words meet the client protocol.

use iris_envelope::Notice;
use iris_protocol::{
    Accepted, Body, CirclePolicyOk, ContactsOk, ErrorFrame, Message, PresenceUpdate, Receipt, ServerFrame, Synced,
    TypingFrom,
};

/// The frame a notice is written as. Every field moves; nothing is copied
/// but the body's reference count.
pub fn frame_of(notice: Notice) -> ServerFrame {
    match notice {
        Notice::Accepted { id, msg_id, ts } => ServerFrame::Accepted(Accepted { id, msg_id, ts }),
        Notice::Message { seq, msg_id, from, body, ts } => {
            ServerFrame::Message(Message { seq, msg_id, from, body: Body(body), ts })
        }
        Notice::Receipt { msg_id, by, state } => ServerFrame::Receipt(Receipt { msg_id, by, state }),
        Notice::Synced { inbox_head, more } => ServerFrame::Synced(Synced { inbox_head, more }),
        Notice::Presence { user, status, last_seen } | Notice::MarkedPresence { user, status, last_seen, .. } => {
            ServerFrame::Presence(PresenceUpdate { user, status, last_seen })
        }
        Notice::Typing { from, state } => ServerFrame::Typing(TypingFrom { from, state }),
        Notice::Refused { code, message, id } => ServerFrame::Error(ErrorFrame { code, message, id }),
        Notice::ContactsOk { count } => ServerFrame::ContactsOk(ContactsOk { count }),
        Notice::CirclePolicyOk { circle } => ServerFrame::CirclePolicyOk(CirclePolicyOk { circle }),
        Notice::WelcomeSlot(never) | Notice::PongSlot(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use iris_protocol::{ErrorCode, PresenceStatus, ReceiptState, TypingState};

    /// A notice and the frame it becomes encode to the same envelope bytes
    /// (so records written before notices read as notices), and the frame
    /// has the notice's `type`.
    #[test]
    fn every_notice_becomes_the_frame_with_its_bytes_and_its_type() {
        let notices = [
            Notice::Accepted { id: "c-1".into(), msg_id: "m-1".into(), ts: 5 },
            Notice::Message {
                seq: 3,
                msg_id: "m-2".into(),
                from: "alice".into(),
                body: Bytes::from_static(b"\xffhi"),
                ts: 6,
            },
            Notice::Receipt { msg_id: "m-3".into(), by: "bob".into(), state: ReceiptState::Delivered },
            Notice::Synced { inbox_head: 9, more: false },
            Notice::Presence { user: "carol".into(), status: PresenceStatus::Offline, last_seen: Some(7) },
            Notice::Presence { user: "carol".into(), status: PresenceStatus::Online, last_seen: None },
            Notice::Typing { from: "dave".into(), state: TypingState::Stop },
            Notice::refused(ErrorCode::TooLarge, "too big", Some("c-2".into())),
            Notice::refused(ErrorCode::Internal, "bug", None),
            Notice::ContactsOk { count: 2 },
            Notice::CirclePolicyOk { circle: "family".into() },
        ];
        for n in notices {
            let frame = frame_of(n.clone());
            assert_eq!(frame.type_name(), n.kind());
            assert_eq!(iris_envelope::encode(&frame), iris_envelope::encode(&n), "{n:?}");
        }
    }

    /// A marked presence (appended after every frame's place) becomes the
    /// same `presence` frame as the unmarked one: the mark stays on the edge.
    #[test]
    fn a_marked_presence_becomes_the_plain_presence_frame() {
        let plain = Notice::Presence { user: "carol".into(), status: PresenceStatus::Away, last_seen: None };
        let marked = Notice::MarkedPresence {
            user: "carol".into(),
            status: PresenceStatus::Away,
            last_seen: None,
            owner: iris_envelope::OwnerMark::new("eu", 4),
        };
        assert_eq!(frame_of(marked), frame_of(plain));
    }
}
