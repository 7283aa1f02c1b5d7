//! The 401 rule of SPEC 7b, once: send a request signed from a token
//! answer; when the provider answers `401` and the credentials are an
//! `oauth2` strategy's (the only ones Nexus can renew), refresh once and
//! send once more, signed with the renewed answer. Static credentials are
//! never refreshed: their `401` is the provider's answer, relayed as it is.
//! Every caller holds the body in memory, so the second send replays it.
//!
//! [`crate::relay::Sender::forward`] applies it for every proxy (the
//! Gateway's lane and router route, `nexus proxy`) and
//! [`crate::Bridge::forward`], keeping the provider connection between the
//! two sends; [`send_with_refresh`] is the same rule for
//! [`crate::Bridge::send`], which sends with reqwest.

use crate::client::TokenAnswer;
use nexus_core::strategy::Strategy;
use std::future::Future;
use std::sync::Arc;

/// Whether a provider's answer `status` to a request signed with `answer`
/// calls for one refresh and one retry.
pub fn refreshes_after(status: u16, answer: &TokenAnswer) -> bool {
    status == 401 && matches!(answer.strategy(), Strategy::Oauth2(_))
}

/// Sends with `answer`; after a `401` that [`refreshes_after`] accepts,
/// renews it with `refresh` and sends once more. `send` signs and sends
/// (it is called at most twice); `status` reads an answer's status.
pub async fn send_with_refresh<R, E, S, SentFut, F, RenewedFut>(
    answer: Arc<TokenAnswer>,
    mut send: S,
    status: impl Fn(&R) -> u16,
    refresh: F,
) -> Result<R, E>
where
    S: FnMut(Arc<TokenAnswer>) -> SentFut,
    SentFut: Future<Output = Result<R, E>>,
    F: FnOnce(Arc<TokenAnswer>) -> RenewedFut,
    RenewedFut: Future<Output = Result<Arc<TokenAnswer>, E>>,
{
    let first = send(answer.clone()).await?;
    if !refreshes_after(status(&first), &answer) {
        return Ok(first);
    }
    // The 401's body is not wanted: let its connection go before the retry.
    drop(first);
    let renewed = refresh(answer).await?;
    send(renewed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::strategy::StrategyType;
    use nexus_core::AuthType;
    use serde_json::Map;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(kind: StrategyType) -> Arc<TokenAnswer> {
        let strategy = Strategy::from_parts(kind, Map::new()).unwrap();
        Arc::new(TokenAnswer::new("c", "p", AuthType::Oauth2, strategy, Map::new()))
    }

    async fn run(kind: StrategyType, statuses: &[u16]) -> (u16, usize, usize) {
        let (sent, refreshed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = send_with_refresh(
            answer(kind),
            |_| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                async move { Ok::<u16, ()>(status) }
            },
            |s| *s,
            |a| {
                refreshed.fetch_add(1, Ordering::SeqCst);
                async move { Ok(a) }
            },
        )
        .await
        .unwrap();
        (out, sent.load(Ordering::SeqCst), refreshed.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn only_oauth2_refreshes_and_only_once() {
        assert_eq!(run(StrategyType::Oauth2, &[200]).await, (200, 1, 0));
        assert_eq!(run(StrategyType::Oauth2, &[401, 200]).await, (200, 2, 1));
        // A second 401 is the answer: no loop.
        assert_eq!(run(StrategyType::Oauth2, &[401, 401]).await, (401, 2, 1));
        for kind in [
            StrategyType::Header,
            StrategyType::QueryParam,
            StrategyType::BasicAuth,
            StrategyType::AwsSigv4,
            StrategyType::HmacPayload,
        ] {
            assert_eq!(run(kind, &[401, 200]).await, (401, 1, 0), "{kind:?}");
        }
        assert_eq!(run(StrategyType::Oauth2, &[403, 200]).await, (403, 1, 0));
    }
}
