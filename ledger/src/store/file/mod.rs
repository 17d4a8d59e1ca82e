//! The embedded backend: a durable, segmented append-only log on local disk.
