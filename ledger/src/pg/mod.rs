//! What the PostgreSQL backends share: the key vault (`privacy::vault::pg`, feature
//! `pg-vault`) and the event store (`store::pg`, feature `pg-store`) test against the same
//! throwaway cluster.

#[doc(hidden)]
pub mod testing;
