//! The contact graph: contacts from clients and from the service API,
//! verified identities, each change logged as a graph event.

use super::*;

impl ShardState {
    /// A client upserts and removes contacts (bounded per user).
    pub(super) fn contacts(
        &mut self,
        now: Millis,
        owner: &UserKey,
        session: SessionAddr,
        upsert: Vec<ContactEntry>,
        remove: Vec<String>,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        match plan_contacts(user, &upsert, &remove, self.config.max_contacts) {
            Err(message) => fx.out.push(reply(&session, Notice::refused(ErrorCode::Forbidden, message, None))),
            Ok(()) => {
                for ContactEntry { user: contact, circle } in upsert {
                    let circle = circle.unwrap_or_else(|| DEFAULT_CIRCLE.to_owned());
                    // A client frame moves a contact; its channels stay.
                    let channels = user.contacts.get(&contact).map(|c| c.channels.clone()).unwrap_or_default();
                    upsert_contact(owner, user, now, contact, Contact { circle, channels }, &mut fx.batch);
                }
                for contact in remove {
                    remove_contact(owner, user, now, contact, &mut fx.batch);
                }
                let count = user.contacts.len() as u32;
                fx.out.push(reply(&session, Notice::ContactsOk { count }));
                fx.presence_changed = true;
            }
        }
    }

    /// The service API replaces the whole contact list.
    pub(super) fn contacts_replace(
        &mut self,
        now: Millis,
        owner: &UserKey,
        list: Vec<iris_envelope::ContactSpec>,
        to: SessionAddr,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        if list.len() > self.config.max_contacts {
            let message = format!("at most {} contacts", self.config.max_contacts);
            fx.out.push(service_reply(&to, ServiceReply::Error { code: ErrorCode::Forbidden, message }));
        } else {
            let mut target: BTreeMap<String, Contact> = BTreeMap::new();
            for c in list {
                let circle = c.circle.unwrap_or_else(|| DEFAULT_CIRCLE.to_owned());
                target.insert(c.user, Contact { circle, channels: c.channels });
            }
            let gone: Vec<String> = user.contacts.keys().filter(|k| !target.contains_key(*k)).cloned().collect();
            let mut upserted = 0;
            for (name, contact) in target {
                if upsert_contact(owner, user, now, name, contact, &mut fx.batch) {
                    upserted += 1;
                }
            }
            let removed = gone.len() as u32;
            for name in gone {
                remove_contact(owner, user, now, name, &mut fx.batch);
            }
            let count = user.contacts.len() as u32;
            fx.out.push(service_reply(&to, ServiceReply::ContactsSynced { upserted, removed, count }));
            fx.presence_changed = upserted > 0 || removed > 0;
        }
    }

    /// The service API records a verified identity (a channel).
    pub(super) fn identity_verified(
        &mut self,
        now: Millis,
        owner: &UserKey,
        channel: String,
        to: SessionAddr,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        if !user.identities.contains(&channel) {
            let record = serde_json::json!({
                "v": GRAPH_EVENT_VERSION, "type": "identity.verified", "tenant": &*owner.tenant,
                "user": &*owner.user, "channel": &channel, "ts": now,
            });
            fx.batch.push(graph_log(owner, &record));
            fx.batch.push(WriteOp::Identity { user: owner.clone(), channel: channel.clone() });
            user.identities.push(channel);
        }
        fx.out.push(service_reply(&to, ServiceReply::IdentityVerified));
    }
}
