//! Projections: everything users look at, derived from the log and rebuildable from zero.
//!
//! `projections` never appends events: it only reads what `ledger` recorded.
