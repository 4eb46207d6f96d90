//! Decisions of the service API that need no I/O, each a pure function
//! tested here: which HTTP status an error code gets, how many records a
//! log page holds, which hours an analytics query covers, how many events
//! a batch may hold, what a `PUT /v1/homes/{user}` body asks for, and
//! what a request that asks a shard gets when it cannot be taken in, handed
//! over or answered in time, which credential a request presents and what
//! each refusal of one means. The handlers in `lib.rs` only carry them out.

use actix_web::http::StatusCode;
use iris_types::ErrorCode;
use std::sync::Arc;

/// Records in a log page when the request names no `limit`.
pub const DEFAULT_LOG_PAGE: usize = 1_000;

/// The most records in one log page.
pub const MAX_LOG_PAGE: usize = 10_000;

/// The longest range one analytics query may cover: 93 days.
pub const MAX_ANALYTICS_RANGE_MS: i64 = 93 * 24 * 3_600_000;

/// The status a request refused with `code` gets.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::BadFrame | ErrorCode::TooLarge | ErrorCode::UnknownType => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Unavailable | ErrorCode::Internal => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Why a request's credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No service token was sent.
    NoToken,
    /// No API key was sent.
    NoKey,
    /// A token was sent and is not valid.
    BadToken,
    /// An API key was sent and is unknown or revoked.
    BadKey,
    /// A valid token without the service scope.
    NoServiceScope,
}

impl Refused {
    /// The status and message a refusal gets.
    pub fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Refused::NoToken => (StatusCode::UNAUTHORIZED, "a service token is required"),
            Refused::NoKey => (StatusCode::UNAUTHORIZED, "an API key is required"),
            Refused::BadToken => (StatusCode::UNAUTHORIZED, "invalid token"),
            Refused::BadKey => (StatusCode::UNAUTHORIZED, "invalid API key"),
            Refused::NoServiceScope => (StatusCode::FORBIDDEN, "this API needs a token with the service scope"),
        }
    }

    /// Whether it counts against the address (`auth.failed_auth_per_minute`):
    /// a credential presented and refused does; a missing one costs nothing
    /// to refuse, and a valid token without the scope proved its holder.
    pub fn counted(self) -> bool {
        matches!(self, Refused::BadToken | Refused::BadKey)
    }
}

/// The API key a request presents: the `X-Api-Key` header, else a bearer
/// credential that starts with the keys' prefix (`key_prefix`).
pub fn presented_key<'r>(header: Option<&'r str>, bearer: Option<&'r str>, key_prefix: &str) -> Option<&'r str> {
    header.or_else(|| bearer.filter(|b| b.starts_with(key_prefix)))
}

/// A service token's check: present, valid (`scopes` is what its
/// verification gave, `None` when it failed), and holding `service`.
pub fn service_token<T>(presented: bool, verified: Option<(T, bool)>) -> Result<T, Refused> {
    match (presented, verified) {
        (false, _) => Err(Refused::NoToken),
        (true, None) => Err(Refused::BadToken),
        (true, Some((_, false))) => Err(Refused::NoServiceScope),
        (true, Some((tenant, true))) => Ok(tenant),
    }
}

/// An API key's check: `None` when no key was presented, `Some(None)` when
/// the key is unknown or revoked.
pub fn api_key<T>(found: Option<Option<T>>) -> Result<T, Refused> {
    match found {
        None => Err(Refused::NoKey),
        Some(None) => Err(Refused::BadKey),
        Some(Some(tenant)) => Ok(tenant),
    }
}

/// Analytics take an API key or else a service token: the key's answer
/// when it holds, else the token's, except that a refused key is the
/// answer (and is counted) when no token was sent at all.
pub fn key_or_token<T>(key: Result<T, Refused>, token: impl FnOnce() -> Result<T, Refused>) -> Result<T, Refused> {
    key.or_else(|k| token().map_err(|t| if k.counted() && !t.counted() { k } else { t }))
}

/// Where a request that asks a shard ([`crate::HttpFront`]'s `ask`) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskFailed {
    /// `max_pending` requests already wait for shards: refused before it
    /// was handed over.
    TooMany,
    /// The shard's queue did not take it within the request's deadline, or
    /// is closed (the node is stopping): never handed over.
    NotHandedOver,
    /// Handed over, but no answer came within the deadline: it may have
    /// been applied.
    NoAnswer,
}

/// Whether a request may ask a shard with `pending` already waiting.
pub fn admit(pending: usize, max_pending: usize) -> Result<(), AskFailed> {
    if pending >= max_pending { Err(AskFailed::TooMany) } else { Ok(()) }
}

/// The status and message of an ask that failed: 503 (retry, nothing was
/// done) before the shard has the request, 504 (retry; it may have been
/// applied, and every service request is idempotent) after.
pub fn ask_failure(failed: AskFailed) -> (StatusCode, &'static str) {
    match failed {
        AskFailed::TooMany => (StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight; retry"),
        AskFailed::NotHandedOver => (StatusCode::SERVICE_UNAVAILABLE, "node is busy or shutting down; retry"),
        AskFailed::NoAnswer => {
            (StatusCode::GATEWAY_TIMEOUT, "no answer in time; the request may have been applied, retry it")
        }
    }
}

/// How many records a log page holds: the request's `limit`, else
/// [`DEFAULT_LOG_PAGE`], always within 1 to [`MAX_LOG_PAGE`].
pub fn log_page(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LOG_PAGE).clamp(1, MAX_LOG_PAGE)
}

/// The range `[from, to)`, in Unix milliseconds, an analytics query at
/// `now` covers: by default up to an hour after `now` and from a day
/// before `to`. Refused, with the message of a 400, unless `from` is
/// before `to` and they are at most [`MAX_ANALYTICS_RANGE_MS`] apart.
pub fn analytics_range(now: i64, from: Option<i64>, to: Option<i64>) -> Result<(i64, i64), &'static str> {
    let to = to.unwrap_or(now.saturating_add(3_600_000));
    let from = from.unwrap_or(to.saturating_sub(24 * 3_600_000));
    if from >= to || to.saturating_sub(from) > MAX_ANALYTICS_RANGE_MS {
        return Err("from must be before to, at most 93 days apart");
    }
    Ok((from, to))
}

/// Whether a batch of `n` events may be ingested: 1 to `max` (the
/// configured `ingest.max_batch`); refused, with the message of a 400,
/// otherwise.
pub fn event_batch(n: usize, max: usize) -> Result<(), String> {
    if n == 0 || n > max {
        return Err(format!("a batch has 1-{max} events"));
    }
    Ok(())
}

/// What the `region` field of a `PUT /v1/homes/{user}` body asks for
/// (`None`: the field was missing; `Some(None)`: null): `Some(region)`
/// to home the user there, `None` to clear the explicit home and fall
/// back to the consistent hash. Refused, with the message of a 400, when
/// the field is missing (rather than taken for null: a body that lost its
/// field would clear the home) or names no region of the federation
/// (`regions`).
pub fn home_change(region: Option<Option<String>>, regions: &[Arc<str>]) -> Result<Option<Arc<str>>, String> {
    match region {
        None => Err("invalid body: region is required (null clears the home)".to_owned()),
        Some(None) => Ok(None),
        Some(Some(r)) => match regions.iter().find(|known| ***known == *r) {
            Some(known) => Ok(Some(known.clone())),
            None => {
                let names: Vec<&str> = regions.iter().map(|r| &**r).collect();
                Err(format!("unknown region {r:?}; the federation has {}", names.join(", ")))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_checked_and_refused_with_what_they_mean() {
        assert_eq!(presented_key(Some("k1"), Some("iris_k2"), "iris_"), Some("k1"), "the header first");
        assert_eq!(presented_key(None, Some("iris_k2"), "iris_"), Some("iris_k2"));
        assert_eq!(presented_key(None, Some("eyJ.token"), "iris_"), None, "a bearer token is not a key");
        assert_eq!(service_token::<&str>(false, None), Err(Refused::NoToken));
        assert_eq!(service_token::<&str>(true, None), Err(Refused::BadToken));
        assert_eq!(service_token(true, Some(("acme", false))), Err(Refused::NoServiceScope));
        assert_eq!(service_token(true, Some(("acme", true))), Ok("acme"));
        assert_eq!(api_key::<&str>(None), Err(Refused::NoKey));
        assert_eq!(api_key::<&str>(Some(None)), Err(Refused::BadKey));
        assert_eq!(api_key(Some(Some("acme"))), Ok("acme"));
        for r in [Refused::NoToken, Refused::NoKey, Refused::NoServiceScope] {
            assert!(!r.counted(), "{r:?}");
        }
        assert!(Refused::BadToken.counted() && Refused::BadKey.counted());
        assert_eq!(Refused::NoServiceScope.answer().0, StatusCode::FORBIDDEN);
        assert_eq!(Refused::BadKey.answer(), (StatusCode::UNAUTHORIZED, "invalid API key"));
    }

    #[test]
    fn analytics_take_a_key_or_a_token_and_report_the_refusal_that_was_presented() {
        assert_eq!(key_or_token(Ok("a"), || Err(Refused::BadToken)), Ok("a"));
        assert_eq!(key_or_token(Err(Refused::NoKey), || Ok("b")), Ok("b"));
        assert_eq!(key_or_token::<&str>(Err(Refused::BadKey), || Err(Refused::NoToken)), Err(Refused::BadKey));
        assert_eq!(key_or_token::<&str>(Err(Refused::NoKey), || Err(Refused::NoToken)), Err(Refused::NoToken));
        assert_eq!(key_or_token::<&str>(Err(Refused::BadKey), || Err(Refused::BadToken)), Err(Refused::BadToken));
        assert_eq!(
            key_or_token::<&str>(Err(Refused::NoKey), || Err(Refused::NoServiceScope)),
            Err(Refused::NoServiceScope)
        );
    }

    #[test]
    fn an_ask_is_refused_at_the_bound_and_says_whether_it_may_have_been_applied() {
        assert_eq!(admit(0, 1), Ok(()));
        assert_eq!(admit(1, 1), Err(AskFailed::TooMany));
        assert_eq!(admit(5, 0), Err(AskFailed::TooMany));
        assert_eq!(ask_failure(AskFailed::TooMany).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ask_failure(AskFailed::NotHandedOver).0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, message) = ask_failure(AskFailed::NoAnswer);
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(message.contains("may have been applied"));
    }

    #[test]
    fn every_error_code_has_its_status() {
        let cases = [
            (ErrorCode::Forbidden, 403),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::BadFrame, 400),
            (ErrorCode::TooLarge, 400),
            (ErrorCode::UnknownType, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 503),
        ];
        for (code, status) in cases {
            assert_eq!(status_for(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn a_log_page_holds_the_default_or_the_limit_within_its_bounds() {
        assert_eq!(log_page(None), 1_000);
        assert_eq!(log_page(Some(0)), 1, "an empty page would never advance");
        assert_eq!(log_page(Some(1)), 1);
        assert_eq!(log_page(Some(250)), 250);
        assert_eq!(log_page(Some(10_000)), 10_000);
        assert_eq!(log_page(Some(10_001)), 10_000);
        assert_eq!(log_page(Some(usize::MAX)), 10_000);
    }

    #[test]
    fn analytics_cover_the_last_day_by_default_and_at_most_93_days() {
        const H: i64 = 3_600_000;
        let now = 1_000 * 24 * H;
        assert_eq!(analytics_range(now, None, None), Ok((now + H - 24 * H, now + H)));
        assert_eq!(analytics_range(now, None, Some(now)), Ok((now - 24 * H, now)), "a day before the end");
        assert_eq!(analytics_range(now, Some(now - 2 * H), None), Ok((now - 2 * H, now + H)));
        assert_eq!(analytics_range(now, Some(0), Some(93 * 24 * H)), Ok((0, 93 * 24 * H)), "93 days exactly");
        assert!(analytics_range(now, Some(0), Some(93 * 24 * H + 1)).is_err(), "over 93 days");
        assert!(analytics_range(now, Some(now), Some(now)).is_err(), "an empty range");
        assert!(analytics_range(now, Some(now + 1), Some(now)).is_err(), "from after to");
        assert!(analytics_range(now, Some(i64::MIN), Some(i64::MAX)).is_err(), "no overflow into a small range");
        assert!(analytics_range(i64::MAX, None, None).is_ok(), "the default saturates");
    }

    #[test]
    fn an_event_batch_has_one_to_the_most_events() {
        assert_eq!(event_batch(0, 500), Err("a batch has 1-500 events".to_owned()));
        assert_eq!(event_batch(1, 500), Ok(()));
        assert_eq!(event_batch(500, 500), Ok(()));
        assert!(event_batch(501, 500).is_err());
    }

    #[test]
    fn a_home_change_names_a_known_region_or_null_and_never_leaves_the_field_out() {
        let regions: Vec<Arc<str>> = vec!["eu".into(), "us".into()];
        assert_eq!(home_change(Some(Some("us".into())), &regions), Ok(Some(Arc::from("us"))));
        assert_eq!(home_change(Some(None), &regions), Ok(None), "null clears");
        let missing = home_change(None, &regions).unwrap_err();
        assert!(missing.contains("region is required"), "{missing}");
        let unknown = home_change(Some(Some("mars".into())), &regions).unwrap_err();
        assert_eq!(unknown, "unknown region \"mars\"; the federation has eu, us");
        assert!(home_change(Some(Some("EU".into())), &regions).is_err(), "names are exact");
    }
}
