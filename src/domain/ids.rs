//! Identifier newtypes. All are UUIDv7 so that ids sort by creation time.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn parse(text: &str) -> Option<Self> {
                Uuid::try_parse(text).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

uuid_id!(
    /// A ledger account.
    AccountId
);
uuid_id!(
    /// A two-phase hold on an account's available balance.
    HoldId
);
uuid_id!(
    /// A journal transaction (one atomic, balanced set of postings).
    TxId
);
uuid_id!(
    /// A payout request (the parent of its chunks).
    PayoutId
);
uuid_id!(
    /// One on-chain transfer of a payout, at most the per-transaction cap.
    ChunkId
);
uuid_id!(
    /// An escrow deal between a buyer's and a seller's account.
    DealId
);
uuid_id!(
    /// A durable timer (AUTO_APPROVE, DISPUTE_TTL).
    TimerId
);
