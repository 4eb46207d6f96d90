//! Tenant bars (docs/adr/0030-a-tenant-deleted-under-running-shards.md): a
//! tenant being deleted from a region is barred in the shared store; every
//! shard, once it learns of the bar, forgets the tenant's users, refuses
//! its inputs, and writes nothing of it again. When every write it issued
//! before the bar has finished, the shard may confirm the bar: from then on
//! nothing of the tenant can land from it, and the deletion can run.

use super::*;
use iris_storage::Bar;

/// Where a bar's confirmation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Confirm {
    /// Due once every ticket up to this one is done.
    After(Ticket),
    /// Handed to the shell to write.
    Sent,
    /// Written.
    Done,
}

/// One bar as the shard holds it.
#[derive(Debug, Clone)]
pub(super) struct Barred {
    id: u64,
    confirm: Confirm,
}

impl ShardState {
    /// The store's bars, all of them (read at the claim and every few
    /// seconds): a bar new here (or a new bar of a tenant, after a lift)
    /// forgets the tenant's users and waits for the writes issued so far;
    /// a tenant no longer listed is served again.
    ///
    /// `now` is when they were read: a shard that has just started here
    /// confirms no bar within [`ShardState::takeover_window`] of first
    /// reading them, however few writes it issued itself: an earlier owner
    /// that never learned of the bar may still have writes of the tenant
    /// landing.
    pub fn set_bars(&mut self, now: Millis, bars: &[Bar]) {
        self.bars_since.get_or_insert(now);
        let listed: HashSet<&Arc<str>> = bars.iter().map(|b| &b.tenant).collect();
        let before = self.bars.len();
        self.bars.retain(|t, _| listed.contains(t));
        if self.bars.len() != before {
            self.bars_changed += 1;
        }
        let newest = self.tickets.next() - 1;
        for bar in bars {
            if self.bars.get(&bar.tenant).is_some_and(|b| b.id == bar.id) {
                continue;
            }
            self.bars_changed += 1;
            self.bars.insert(bar.tenant.clone(), Barred { id: bar.id, confirm: Confirm::After(newest) });
            let tenant = &bar.tenant;
            // Everything held of its users goes: no later input, lease
            // check or repair can find one to write.
            self.users.retain(|k, _| k.tenant != *tenant);
            self.records_to_repair.retain(|k| k.tenant != *tenant);
            self.meta_to_repair.retain(|k| k.tenant != *tenant);
            if let Some(takeover) = &mut self.takeover {
                takeover.retain(|k| k.tenant != *tenant);
            }
        }
    }

    /// Whether `tenant` is barred here.
    pub fn is_barred(&self, tenant: &str) -> bool {
        !self.bars.is_empty() && self.bars.contains_key(tenant)
    }

    /// How many times the bars held here changed (a tenant barred or
    /// lifted). An input whose needs were judged while this count was
    /// lower may have been judged by a bar that is gone (nothing loaded
    /// for it) and must be answered `unavailable`, like a stale look-up.
    pub fn bars_changed(&self) -> u64 {
        self.bars_changed
    }

    /// Bars whose confirmation is due: every write issued before the shard
    /// learned of them has finished, and the previous owner's writes have
    /// had time to land (see [`ShardState::takeover_window`]). Each is handed out
    /// once; the shell reports the write's result with
    /// [`ShardState::bar_confirmed`].
    pub fn bars_to_confirm(&mut self, now: Millis) -> Vec<Bar> {
        if self.bars.is_empty() || self.bars_since.is_none_or(|since| now - since < self.takeover_window()) {
            return Vec::new();
        }
        let done = self.tickets.done_upto();
        let mut due = Vec::new();
        for (tenant, b) in self.bars.iter_mut() {
            if matches!(b.confirm, Confirm::After(t) if t <= done) {
                b.confirm = Confirm::Sent;
                due.push(Bar { tenant: tenant.clone(), id: b.id });
            }
        }
        due.sort();
        due
    }

    /// The confirmation of `bar` was written (`ok`) or failed (handed out
    /// again by the next [`ShardState::bars_to_confirm`]).
    pub fn bar_confirmed(&mut self, bar: &Bar, ok: bool) {
        if let Some(b) = self.bars.get_mut(&bar.tenant)
            && b.id == bar.id
            && b.confirm == Confirm::Sent
        {
            b.confirm = if ok { Confirm::Done } else { Confirm::After(0) };
        }
    }
}
