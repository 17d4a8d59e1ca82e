//! Finance reports, each as CSV (RFC 4180) and JSON, from [`LedgerViews`].

pub mod csv;
