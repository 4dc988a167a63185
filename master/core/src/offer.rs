//! The offer lifecycle.
//!
//! ```text
//!   Outstanding --accept--> Accepted
//!               --decline-> Declined
//!               --rescind-> Rescinded   (agent lost or disconnected, framework failed over)
//!               --timeout-> Expired     (held past --offer-timeout)
//! ```
//! While outstanding, an offer holds its resources: they count as offered on
//! the agent and allocated to the framework. Every end state returns what the
//! offer held (an accept keeps what its tasks use).

use cairn_model::{Offer, Time};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OfferState {
    Outstanding,
    Accepted,
    Declined,
    Rescinded,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OfferEvent {
    Accept,
    Decline,
    Rescind,
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("offer cannot go from {from:?} on {event:?}")]
pub struct InvalidOfferTransition {
    pub from: OfferState,
    pub event: OfferEvent,
}

impl OfferState {
    pub fn transition(self, event: OfferEvent) -> Result<OfferState, InvalidOfferTransition> {
        use OfferEvent::*;
        use OfferState::*;
        match (self, event) {
            (Outstanding, Accept) => Ok(Accepted),
            (Outstanding, Decline) => Ok(Declined),
            (Outstanding, Rescind) => Ok(Rescinded),
            (Outstanding, Timeout) => Ok(Expired),
            (Accepted | Declined | Rescinded | Expired, Accept | Decline | Rescind | Timeout) => {
                Err(InvalidOfferTransition { from: self, event })
            }
        }
    }
}

/// An outstanding offer as the master tracks it.
#[derive(Clone, Debug)]
pub struct OfferRecord {
    pub offer: Offer,
    pub state: OfferState,
    pub created_at: Time,
    pub expires_at: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::OfferEvent::*;
    use super::OfferState::*;

    #[test]
    fn an_offer_ends_exactly_once() {
        for (event, end) in [
            (Accept, Accepted),
            (Decline, Declined),
            (Rescind, Rescinded),
            (Timeout, Expired),
        ] {
            assert_eq!(Outstanding.transition(event), Ok(end));
            for again in [Accept, Decline, Rescind, Timeout] {
                assert!(end.transition(again).is_err(), "{end:?} then {again:?}");
            }
        }
    }
}
