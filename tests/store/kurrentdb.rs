//! The conformance suite against a KurrentDB server, when `KURRENTDB_URL` names one, e.g.
//! `KURRENTDB_URL=kurrentdb://admin:changeit@localhost:2113?tls=false cargo test -p
//! workspace-tests --test store kurrentdb`, with a node such as
//! `docker run -p 2113:2113 -e KURRENTDB_MAX_APPEND_SIZE=16777216
//! docker.kurrent.io/kurrent-latest/kurrentdb:25.1 --insecure` (the suite appends a
//! 1 MiB event and 4096 events at once; the server's default limit is 1 MiB per append).
//!
//! A server is not empty between runs, so every check works on streams of its own; the
//! checks run one at a time, since some compare the head of `$all` before and after.

use ledger::store::kurrentdb::{ConnectionString, KurrentDbStore};
use tokio::sync::{Mutex, MutexGuard};

static ONE_CHECK_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn fresh() -> Option<(KurrentDbStore, MutexGuard<'static, ()>)> {
    let Ok(url) = std::env::var("KURRENTDB_URL") else {
        println!("skipped: KURRENTDB_URL is not set");
        return None;
    };
    let connection = ConnectionString::parse(&url).unwrap_or_else(|error| panic!("{error}"));
    let guard = ONE_CHECK_AT_A_TIME.lock().await;
    let store = KurrentDbStore::connect(connection)
        .await
        .unwrap_or_else(|error| panic!("KURRENTDB_URL is set but unusable: {error}"));
    Some((store, guard))
}

ledger::store_conformance_tests!(optional: fresh());
